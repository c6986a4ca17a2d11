//! The resume decision (CTRL-RESUME-1, UDP-RESUME-3/-4/-6): given what the server holds of an
//! earlier upload and what the new `Put` asks for, which bytes of the partial are kept, which
//! ranges count as held, and whether the saved range map goes. Pure; no I/O.

use crate::proto::Transport;
use crate::store::SavedRanges;
use crate::udp::ranges::RangeSet;

/// What the server holds and what the client asks for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ask<'a> {
    /// Declared size of the file being uploaded.
    pub size: u64,
    pub resume: bool,
    pub transport: Transport,
    /// Length of the existing partial file, if one exists.
    pub partial: Option<u64>,
    /// The saved range map of the partial (only looked up when resuming).
    pub map: Option<&'a SavedRanges>,
}

/// What the upload does with the partial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// Length the partial is opened at (its current length when resuming, else 0).
    pub found: u64,
    /// Bytes of the partial that stay: it is cut to this length. A TCP upload appends after
    /// them; a UDP upload keeps the whole partial and fills the holes outside `held`.
    pub keep: u64,
    /// Byte ranges already held (sent back as `held` over UDP).
    pub held: RangeSet,
    /// The saved range map is deleted once the partial is cut (UDP-RESUME-6).
    pub drop_map: bool,
}

/// Why a resume cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The partial is longer than the declared size.
    PartialTooLong { held: u64, size: u64 },
    /// A UDP partial's map was made for a file of another size.
    MapForOtherSize { map: u64, size: u64 },
}

/// Decides how an upload continues (or starts over).
///
/// A partial left by a UDP upload may have holes; its map says which bytes are real
/// (UDP-RESUME-3). A UDP resume continues from that map; a TCP resume keeps only the map's
/// contiguous prefix and drops the map. A map claiming bytes past the partial's end is stale
/// and counts for nothing (UDP-RESUME-4).
pub(super) fn decide(ask: Ask<'_>) -> Result<Plan, Refusal> {
    if !ask.resume {
        return Ok(Plan { found: 0, keep: 0, held: RangeSet::new(), drop_map: true });
    }
    let found = ask.partial.unwrap_or(0);
    if found > ask.size {
        return Err(Refusal::PartialTooLong { held: found, size: ask.size });
    }
    let held = match (ask.map, ask.transport) {
        (Some((s, _)), Transport::Udp) if *s != ask.size => {
            return Err(Refusal::MapForOtherSize { map: *s, size: ask.size })
        }
        (Some((_, ranges)), Transport::Udp) if ranges.iter().all(|r| r.1 <= found) => {
            RangeSet::from_ranges(ranges.iter().copied())
        }
        (Some(_), Transport::Udp) => RangeSet::new(),
        (Some((_, ranges)), Transport::Tcp) => {
            let prefix = RangeSet::from_ranges(ranges.iter().copied()).contiguous_from(0);
            RangeSet::from_ranges([(0, prefix.min(found))])
        }
        (None, _) => RangeSet::from_ranges([(0, found)]),
    };
    let keep = match ask.transport {
        Transport::Tcp => held.contiguous_from(0),
        Transport::Udp => found,
    };
    let drop_map = ask.map.is_some() && ask.transport == Transport::Tcp;
    Ok(Plan { found, keep, held, drop_map })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Transport::{Tcp, Udp};

    fn set(r: &[(u64, u64)]) -> RangeSet {
        RangeSet::from_ranges(r.iter().copied())
    }

    /// One row: (size, resume, transport, partial, map) and the expected decision.
    type Row<'a> = (u64, bool, Transport, Option<u64>, Option<&'a SavedRanges>, Result<Plan, Refusal>);

    fn plan(found: u64, keep: u64, held: &[(u64, u64)], drop_map: bool) -> Result<Plan, Refusal> {
        Ok(Plan { found, keep, held: set(held), drop_map })
    }

    /// Every combination that matters: (size, resume, transport, partial, map) -> outcome.
    #[test]
    fn resume_decision_table() {
        let holes: SavedRanges = (100, vec![(0, 10), (20, 30)]);
        let prefix: SavedRanges = (100, vec![(0, 40)]);
        let stale: SavedRanges = (100, vec![(0, 10), (50, 80)]);
        let other_size: SavedRanges = (90, vec![(0, 10)]);
        #[rustfmt::skip]
        let table: Vec<Row<'_>> = vec![
            // Not resuming: start over whatever is there; any map goes.
            (100, false, Tcp, None,      None,              plan(0, 0, &[], true)),
            (100, false, Tcp, Some(50),  None,              plan(0, 0, &[], true)),
            (100, false, Udp, Some(500), Some(&holes),      plan(0, 0, &[], true)),
            // Resuming with nothing there is a fresh upload.
            (100, true,  Tcp, None,      None,              plan(0, 0, &[], false)),
            (100, true,  Udp, None,      None,              plan(0, 0, &[], false)),
            // A partial without a map is a contiguous prefix.
            (100, true,  Tcp, Some(40),  None,              plan(40, 40, &[(0, 40)], false)),
            (100, true,  Udp, Some(40),  None,              plan(40, 40, &[(0, 40)], false)),
            (100, true,  Tcp, Some(100), None,              plan(100, 100, &[(0, 100)], false)),
            // A partial longer than the declared size: the source changed.
            (30,  true,  Tcp, Some(40),  None,              Err(Refusal::PartialTooLong { held: 40, size: 30 })),
            (30,  true,  Udp, Some(40),  Some(&holes),      Err(Refusal::PartialTooLong { held: 40, size: 30 })),
            // UDP continues from the map, keeping the whole partial.
            (100, true,  Udp, Some(30),  Some(&holes),      plan(30, 30, &[(0, 10), (20, 30)], false)),
            (100, true,  Udp, Some(40),  Some(&prefix),     plan(40, 40, &[(0, 40)], false)),
            // A map claiming bytes past the partial's end is stale: nothing is held.
            (100, true,  Udp, Some(60),  Some(&stale),      plan(60, 60, &[], false)),
            // A map for another size: refused over UDP.
            (100, true,  Udp, Some(10),  Some(&other_size), Err(Refusal::MapForOtherSize { map: 90, size: 100 })),
            // TCP keeps only the contiguous prefix and drops the map.
            (100, true,  Tcp, Some(30),  Some(&holes),      plan(30, 10, &[(0, 10)], true)),
            (100, true,  Tcp, Some(30),  Some(&prefix),     plan(30, 30, &[(0, 30)], true)),
            (100, true,  Tcp, Some(60),  Some(&other_size), plan(60, 10, &[(0, 10)], true)),
        ];
        for (i, (size, resume, transport, partial, map, want)) in table.into_iter().enumerate() {
            let got = decide(Ask { size, resume, transport, partial, map });
            assert_eq!(got, want, "row {i}: size {size} resume {resume} {transport:?} partial {partial:?} map {map:?}");
        }
    }
}
