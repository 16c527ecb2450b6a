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
