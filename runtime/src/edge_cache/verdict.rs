//! What the cache did with one fetch: the guest's `x-cache` and the
//! metrics' `result`.

/// What the cache did with one fetch, as `x-cache` and the metrics say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Served from the cache, fresh.
    Hit,
    /// Fetched from the origin (and stored if it may be).
    Miss,
    /// Served from the cache, stale, as the response allowed: while a
    /// background fetch refreshes it (`stale-while-revalidate`), or
    /// because the origin failed (`stale-if-error`).
    Stale,
    /// Stale in the cache, confirmed by the origin (304), served.
    Revalidated,
    /// Not the cache's to answer: a range, validators of the guest's own,
    /// or a request body (passed to the origin as it is).
    Bypass,
}

impl Verdict {
    /// Every verdict, in metric label order.
    pub const ALL: [Verdict; 5] = [
        Verdict::Hit,
        Verdict::Miss,
        Verdict::Stale,
        Verdict::Revalidated,
        Verdict::Bypass,
    ];

    /// The `x-cache` value.
    pub fn header(self) -> &'static str {
        match self {
            Verdict::Hit => "HIT",
            Verdict::Miss => "MISS",
            Verdict::Stale => "STALE",
            Verdict::Revalidated => "REVALIDATED",
            Verdict::Bypass => "BYPASS",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Hit => "hit",
            Verdict::Miss => "miss",
            Verdict::Stale => "stale",
            Verdict::Revalidated => "revalidated",
            Verdict::Bypass => "bypass",
        }
    }
}
