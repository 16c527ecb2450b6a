//! Tag helpers shared by the wire modules: building custom tags and finding tags by name.
//!
//! Each module keeps its own error type (so errors name their NIP); the lookups here report
//! what went wrong in a small enum the modules map into their errors.

use nostr::{Event, Tag, TagKind};

/// A tag `[name, values…]` of a kind rust-nostr does not model.
pub(crate) fn custom_tag<I, S>(name: &str, values: I) -> Tag
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Tag::custom(TagKind::custom(name), values)
}

/// Every tag of `event` named `name`, as its values (element 0 is the name).
pub(crate) fn tags_named<'a>(
    event: &'a Event,
    name: &'a str,
) -> impl Iterator<Item = &'a [String]> + 'a {
    event
        .tags
        .iter()
        .map(Tag::as_slice)
        .filter(move |values| values[0] == name)
}

/// The first tag of `event` named `name`.
pub(crate) fn first_tag<'a>(event: &'a Event, name: &'a str) -> Option<&'a [String]> {
    tags_named(event, name).next()
}

/// Why a tag that may appear once did not give one value.
pub(crate) enum SingleValueError {
    /// The tag appears more than once.
    Duplicate(&'static str),
    /// The tag has no value, or an empty one.
    Empty(&'static str),
}

/// The value of the only `name` tag, if there is one.
pub(crate) fn single_value(
    event: &Event,
    name: &'static str,
) -> Result<Option<String>, SingleValueError> {
    let mut found = tags_named(event, name);
    let Some(tag) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(SingleValueError::Duplicate(name));
    }
    tag.get(1)
        .filter(|v| !v.is_empty())
        .cloned()
        .map(Some)
        .ok_or(SingleValueError::Empty(name))
}

/// Tag edits for malformed-input tests: start from a good event's tags and change one thing.
#[cfg(test)]
pub(crate) struct TagEdits {
    pub base: Vec<Vec<String>>,
}

#[cfg(test)]
impl TagEdits {
    pub fn of(event: &nostr::Event) -> Self {
        TagEdits {
            base: event.tags.iter().map(|t| t.clone().to_vec()).collect(),
        }
    }

    /// The first tag named `name` replaced by `value`.
    pub fn replace(&self, name: &str, value: &[&str]) -> Vec<Vec<String>> {
        let mut done = false;
        self.base
            .iter()
            .map(|t| {
                if t[0] == name && !done {
                    done = true;
                    value.iter().map(|s| s.to_string()).collect()
                } else {
                    t.clone()
                }
            })
            .collect()
    }

    /// Every tag named `name` removed.
    pub fn drop(&self, name: &str) -> Vec<Vec<String>> {
        self.base.iter().filter(|t| t[0] != name).cloned().collect()
    }

    /// One more tag at the end.
    pub fn with(&self, extra: &[&str]) -> Vec<Vec<String>> {
        let mut tags = self.base.clone();
        tags.push(extra.iter().map(|s| s.to_string()).collect());
        tags
    }
}
