//! The expression syntax: how a value refers to what an earlier job produced.
//!
//! Expressions look like GitHub Actions' but are deliberately tiny and strict — there are no
//! operators, functions or fallbacks, only references, so that a typo is an error at lint time
//! rather than an empty string at run time:
//!
//! | expression | value at run time |
//! |---|---|
//! | `${{ jobs.<id>.result }}` | the id (hex) of job `<id>`'s NIP-90 result event — use with `type: job` |
//! | `${{ jobs.<id>.artifacts['<path>'].url }}` | a Blossom URL of that artifact |
//! | `${{ jobs.<id>.artifacts['<path>'].sha256 }}` | the artifact's sha256 (hex) |
//! | `${{ inputs.<name> }}` | a `manual` trigger input (its default on other triggers) |
//!
//! Expressions may appear in `env` values and in DVM `inputs[].value` and `params` values,
//! anywhere inside the string and several times. They are *not* expanded inside `run`
//! scripts: splicing run-time text into shell source is the classic CI script-injection hole,
//! so the linter refuses `${{` there and points to `env` instead.
//!
//! The plan keeps values as written; the router resolves them with [`render`] once the
//! referenced jobs have finished.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which property of an artifact an expression wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactField {
    Url,
    Sha256,
}

/// What an expression refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reference {
    /// The result event id of a job.
    JobResult { job: String },
    /// A property of one artifact of a job.
    Artifact {
        job: String,
        path: String,
        field: ArtifactField,
    },
    /// A manual trigger input.
    Input { name: String },
}

impl Reference {
    /// The job this reference reads from, if any.
    pub fn job(&self) -> Option<&str> {
        match self {
            Reference::JobResult { job } | Reference::Artifact { job, .. } => Some(job),
            Reference::Input { .. } => None,
        }
    }
}

impl fmt::Display for Reference {
    /// The canonical spelling, without `${{ }}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::JobResult { job } => write!(f, "jobs.{job}.result"),
            Reference::Artifact { job, path, field } => {
                let field = match field {
                    ArtifactField::Url => "url",
                    ArtifactField::Sha256 => "sha256",
                };
                // A path cannot contain the quote it is written in, so pick the other one.
                let quote = if path.contains('\'') { '"' } else { '\'' };
                write!(f, "jobs.{job}.artifacts[{quote}{path}{quote}].{field}")
            }
            Reference::Input { name } => write!(f, "inputs.{name}"),
        }
    }
}

/// A piece of a string value: literal text or an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    Literal(&'a str),
    Expr(Reference),
}

/// Why a string's expressions do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("unclosed expression: \"${{{{\" without \"}}}}\"")]
    Unclosed,
    #[error("unknown expression \"${{{{ {0} }}}}\"")]
    Unknown(String),
}

/// The forms an expression may take, for hints.
pub(crate) const FORMS: &str = "expressions are ${{ jobs.<id>.result }}, \
     ${{ jobs.<id>.artifacts['<path>'].url }}, ${{ jobs.<id>.artifacts['<path>'].sha256 }} \
     and ${{ inputs.<name> }}";

/// Splits `text` into literal text and expressions.
pub fn parse_template(text: &str) -> Result<Vec<Segment<'_>>, ExprError> {
    let mut segments = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            segments.push(Segment::Literal(&rest[..start]));
        }
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or(ExprError::Unclosed)?;
        segments.push(Segment::Expr(parse_reference(&after[..end])?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest));
    }
    Ok(segments)
}

/// Every reference in `text`, in order.
pub fn references(text: &str) -> Result<Vec<Reference>, ExprError> {
    Ok(parse_template(text)?
        .into_iter()
        .filter_map(|s| match s {
            Segment::Expr(r) => Some(r),
            Segment::Literal(_) => None,
        })
        .collect())
}

/// Why a value could not be resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Parse(#[from] ExprError),
    #[error("no value for ${{{{ {0} }}}}")]
    Unresolved(Reference),
}

/// Replaces every expression in `text` with what `resolve` returns for it.
pub fn render(
    text: &str,
    mut resolve: impl FnMut(&Reference) -> Option<String>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(text.len());
    for segment in parse_template(text)? {
        match segment {
            Segment::Literal(s) => out.push_str(s),
            Segment::Expr(r) => match resolve(&r) {
                Some(value) => out.push_str(&value),
                None => return Err(RenderError::Unresolved(r)),
            },
        }
    }
    Ok(out)
}

/// `text` with every expression in its canonical spelling (`${{ jobs.a.result }}`), so that
/// spacing and quoting do not change the plan or its hash.
pub fn normalize(text: &str) -> Result<String, ExprError> {
    let mut out = String::with_capacity(text.len());
    for segment in parse_template(text)? {
        match segment {
            Segment::Literal(s) => out.push_str(s),
            Segment::Expr(r) => {
                out.push_str("${{ ");
                out.push_str(&r.to_string());
                out.push_str(" }}");
            }
        }
    }
    Ok(out)
}

/// Whether `s` is an identifier as job ids and input names must be: a letter or `_`, then
/// letters, digits, `_` or `-` (GitHub Actions' rule for job ids).
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Takes the longest identifier-looking prefix of `s`.
fn split_identifier(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(s.len());
    s.split_at(end)
}

fn parse_reference(inner: &str) -> Result<Reference, ExprError> {
    let text = inner.trim();
    let unknown = || ExprError::Unknown(text.to_owned());
    if let Some(name) = text.strip_prefix("inputs.") {
        return if is_identifier(name) {
            Ok(Reference::Input {
                name: name.to_owned(),
            })
        } else {
            Err(unknown())
        };
    }
    let rest = text.strip_prefix("jobs.").ok_or_else(unknown)?;
    let (job, rest) = split_identifier(rest);
    if !is_identifier(job) {
        return Err(unknown());
    }
    let job = job.to_owned();
    if rest == ".result" {
        return Ok(Reference::JobResult { job });
    }
    let rest = rest.strip_prefix(".artifacts[").ok_or_else(unknown)?;
    let quote = rest.chars().next().filter(|q| *q == '\'' || *q == '"');
    let quote = quote.ok_or_else(unknown)?;
    let rest = &rest[1..];
    let close = rest.find(quote).ok_or_else(unknown)?;
    let path = &rest[..close];
    let field = match &rest[close + 1..] {
        "].url" => ArtifactField::Url,
        "].sha256" => ArtifactField::Sha256,
        _ => return Err(unknown()),
    };
    if path.is_empty() {
        return Err(unknown());
    }
    Ok(Reference::Artifact {
        job,
        path: path.to_owned(),
        field,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(job: &str, path: &str, field: ArtifactField) -> Reference {
        Reference::Artifact {
            job: job.into(),
            path: path.into(),
            field,
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            references("${{ jobs.build.result }}"),
            Ok(vec![Reference::JobResult {
                job: "build".into()
            }])
        );
        assert_eq!(
            references("${{jobs.build.artifacts['out/app'].url}}"),
            Ok(vec![artifact("build", "out/app", ArtifactField::Url)])
        );
        assert_eq!(
            references(r#"sha=${{ jobs.b-1.artifacts["a b"].sha256 }};"#),
            Ok(vec![artifact("b-1", "a b", ArtifactField::Sha256)])
        );
        assert_eq!(
            references("${{ inputs.reason }} and ${{ inputs.other }}"),
            Ok(vec![
                Reference::Input {
                    name: "reason".into()
                },
                Reference::Input {
                    name: "other".into()
                }
            ])
        );
        assert_eq!(references("no expressions, $ {{ x }}"), Ok(vec![]));
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "${{ jobs.build }}",
            "${{ jobs.build.outputs.x }}",
            "${{ jobs.build.artifacts[out/app].url }}",
            "${{ jobs.build.artifacts['out/app'].size }}",
            "${{ jobs.build.artifacts['out/app.url }}",
            "${{ jobs.build.artifacts[''].url }}",
            "${{ jobs..result }}",
            "${{ jobs.1x.result }}",
            "${{ secrets.TOKEN }}",
            "${{ inputs.a.b }}",
            "${{ }}",
            "${{ jobs.build.result || 'x' }}",
        ] {
            assert!(
                matches!(references(bad), Err(ExprError::Unknown(_))),
                "{bad}"
            );
        }
        assert_eq!(
            references("${{ jobs.build.result "),
            Err(ExprError::Unclosed)
        );
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "jobs.build.result",
            "jobs.build.artifacts['out/app'].url",
            "jobs.build.artifacts['out/app'].sha256",
            "inputs.reason",
        ] {
            let parsed = references(&format!("${{{{ {text} }}}}")).expect("valid");
            assert_eq!(parsed[0].to_string(), text);
        }
    }

    #[test]
    fn normalizes_spelling() {
        assert_eq!(
            normalize(r#"a ${{jobs.b.artifacts["x"].url}} b ${{  inputs.c}}"#),
            Ok("a ${{ jobs.b.artifacts['x'].url }} b ${{ inputs.c }}".to_owned())
        );
        let quoted = r#"${{ jobs.b.artifacts["it's"].url }}"#;
        assert_eq!(normalize(quoted), Ok(quoted.to_owned()));
        assert_eq!(normalize("plain"), Ok("plain".to_owned()));
    }

    #[test]
    fn renders_with_a_resolver() {
        let out = render(
            "url=${{ jobs.build.artifacts['out/app'].url }}!",
            |r| match r {
                Reference::Artifact { path, .. } => Some(format!("https://b.example/{path}")),
                _ => None,
            },
        );
        assert_eq!(out, Ok("url=https://b.example/out/app!".to_owned()));
        assert_eq!(
            render("${{ jobs.x.result }}", |_| None),
            Err(RenderError::Unresolved(Reference::JobResult {
                job: "x".into()
            }))
        );
        assert_eq!(
            ExprError::Unknown("x".into()).to_string(),
            "unknown expression \"${{ x }}\""
        );
    }
}
