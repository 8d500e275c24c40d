//! [`Served`]: how a call was served, what a caller learns beside its value.

use std::fmt;

/// How a call was served: what a caller learns beside its value.
///
/// ```
/// use dogpile_runtime::region::Served;
/// use dogpile_runtime::Region;
///
/// let region: Region<u8, u8> = Region::builder().build().unwrap();
/// assert_eq!(region.get_with_served(&1, || 1), (1, Served::Created));
/// assert_eq!(region.get_with_served(&1, || 2), (1, Served::Fresh));
/// assert_eq!(Served::Fresh.to_string(), "fresh");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Served {
    /// A stored value within its lifetime.
    Fresh,
    /// An expired stored value, returned at once while another caller (or the background)
    /// regenerates it.
    Stale,
    /// This caller ran the creator.
    Created,
    /// There was no value: this caller waited for another caller's creator and got its value.
    Waited,
    /// The store or mutex failed: this caller ran the creator without the cache.
    Direct,
}

impl Served {
    /// The lower-case name, as in an `X-Cache` header or a metric label.
    ///
    /// ```
    /// # use dogpile_runtime::region::Served;
    /// assert_eq!(Served::Stale.as_str(), "stale");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Fresh => "fresh",
            Served::Stale => "stale",
            Served::Created => "created",
            Served::Waited => "waited",
            Served::Direct => "direct",
        }
    }
}

/// The lower-case name, padded to a width if one is given, for aligned logs.
///
/// ```
/// use dogpile_runtime::region::Served;
/// assert_eq!(format!("{}", Served::Stale), "stale");
/// assert_eq!(format!("[{:<7}]", Served::Fresh), "[fresh  ]");
/// ```
impl fmt::Display for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}
