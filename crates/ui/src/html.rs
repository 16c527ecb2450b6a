//! HTML the dashboard writes: escaping, the page frame, ANSI colours as HTML, and small
//! formatting helpers.
//!
//! Everything that comes from a relay or a Blossom server (log lines, names, reasons, tags) is
//! attacker-controlled: it reaches a page only through [`esc`] (or [`ansi_to_html`], which
//! escapes every text run), never as markup. The pages also carry a Content-Security-Policy
//! that allows no inline script, as a second line of defence.

use std::fmt::Write;

/// `text` escaped for HTML text and double- or single-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters (terminal escapes included) say nothing on a page.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded for a URL path segment or query value.
pub fn url_part(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The first 12 hex characters of a key or id: enough to tell them apart on a page.
pub fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// A duration in words a person reads at a glance: `850 ms`, `12 s`, `3 min 05 s`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{} s", ms / 1000),
        _ => format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60),
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Which page of the navigation is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Runs,
    Releases,
    Market,
}

/// A whole page: navigation, `main` (whose content the live stream at `live` replaces), the
/// stylesheet and the one script.
pub fn page(title: &str, section: Section, live: &str, main: &str) -> String {
    let link = |href: &str, label: &str, this: Section| {
        let current = if this == section {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Quorum CI</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\">\
         <script src=\"/assets/app.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><nav aria-label=\"Sections\"><span class=\"brand\">Quorum CI</span>{runs}{releases}{market}</nav>\
         <span id=\"live-state\" role=\"status\" aria-live=\"polite\">connecting…</span></header>\
         <main id=\"main\" tabindex=\"-1\" data-live=\"{live}\">{main}</main></body></html>\n",
        title = esc(title),
        runs = link("/", "Runs", Section::Runs),
        releases = link("/releases", "Releases", Section::Releases),
        market = link("/market", "Market", Section::Market),
        live = esc(live),
    )
}

/// A log with ANSI SGR colours (`ESC [ … m`) as `<span class="…">`, every text run escaped.
/// Other escape sequences are dropped; the 8 colours and their bright variants, bold,
/// underline and resets are kept.
pub fn ansi_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open = false;
    let mut fg: Option<u8> = None;
    let mut bold = false;
    let mut underline = false;
    let mut chars = text.chars().peekable();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        out.push_str(&esc(run));
        run.clear();
    };
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            run.push(c);
            continue;
        }
        flush(&mut run, &mut out);
        if chars.peek() != Some(&'[') {
            // A lone ESC or another kind of sequence: drop the next character with it.
            chars.next();
            continue;
        }
        chars.next();
        let mut params = String::new();
        let mut last = None;
        for c in chars.by_ref() {
            if c.is_ascii_digit() || c == ';' {
                params.push(c);
            } else {
                last = Some(c);
                break;
            }
        }
        if last != Some('m') {
            continue;
        }
        let codes: Vec<u8> = if params.is_empty() {
            vec![0]
        } else {
            params.split(';').map(|p| p.parse().unwrap_or(0)).collect()
        };
        for code in codes {
            match code {
                0 => {
                    fg = None;
                    bold = false;
                    underline = false;
                }
                1 => bold = true,
                4 => underline = true,
                22 => bold = false,
                24 => underline = false,
                39 => fg = None,
                30..=37 => fg = Some(code - 30),
                90..=97 => fg = Some(code - 90 + 8),
                _ => {}
            }
        }
        if open {
            out.push_str("</span>");
            open = false;
        }
        let mut classes = Vec::new();
        if let Some(colour) = fg {
            classes.push(format!("c{colour}"));
        }
        if bold {
            classes.push("b".to_string());
        }
        if underline {
            classes.push("u".to_string());
        }
        if !classes.is_empty() {
            let _ = write!(out, "<span class=\"{}\">", classes.join(" "));
            open = true;
        }
    }
    flush(&mut run, &mut out);
    if open {
        out.push_str("</span>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_from_the_network_is_text() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("a\u{1b}[31mb"), "a\u{FFFD}[31mb");
    }

    #[test]
    fn ansi_colours_become_classes_and_text_stays_escaped() {
        assert_eq!(
            ansi_to_html("\u{1b}[32mok <b>\u{1b}[0m done"),
            "<span class=\"c2\">ok &lt;b&gt;</span> done"
        );
        assert_eq!(
            ansi_to_html("\u{1b}[1;91mFAIL\u{1b}[m"),
            "<span class=\"c9 b\">FAIL</span>"
        );
        // Cursor movement and other sequences vanish; an unterminated one eats nothing else.
        assert_eq!(ansi_to_html("a\u{1b}[2Kb\u{1b}]c"), "abc");
        assert_eq!(ansi_to_html("\u{1b}[31"), "");
    }

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_767_323_045), "2026-01-02 03:04:05");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_400), "12 s");
        assert_eq!(duration(185_000), "3 min 05 s");
        assert_eq!(url_part("30617:ab:app x"), "30617%3Aab%3Aapp%20x");
    }
}
