//! The stylesheet and the one script, embedded in the binary: no CDN, nothing fetched.

pub const CSS: &str = include_str!("../assets/app.css");
pub const JS: &str = include_str!("../assets/app.js");
