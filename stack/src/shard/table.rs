//! The flow table's storage: a slab with generations, the mio token packing, and the timer
//! heap. No allocation per packet: slots and heap entries are reused.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use mio::Token;

/// What a token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The shard's waker: messages from the switch loop or the API.
    Waker,
    /// A flow's host socket.
    Flow,
    /// A `ServeUdp` socket (its index is in the serve slab).
    Serve,
}

const KIND_BITS: u32 = 4;
const INDEX_BITS: u32 = 32;
const GEN_BITS: u32 = 28;
const KIND_WAKER: usize = 1;
const KIND_FLOW: usize = 2;
const KIND_SERVE: usize = 3;

/// A slot of the slab and the generation of its occupant: a token or timer entry of a flow
/// that is gone (and whose slot was reused) never matches the new occupant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FlowId {
    pub index: u32,
    pub gen: u32,
}

/// Packs (kind, generation, slab index) into a mio token; decoded in one place.
pub(crate) fn token(kind: Kind, id: FlowId) -> Token {
    let k = match kind {
        Kind::Waker => KIND_WAKER,
        Kind::Flow => KIND_FLOW,
        Kind::Serve => KIND_SERVE,
    };
    let index = usize::try_from(id.index).unwrap_or(0);
    let gen = usize::try_from(id.gen & ((1 << GEN_BITS) - 1)).unwrap_or(0);
    Token(k | (index << KIND_BITS) | (gen << (KIND_BITS + INDEX_BITS)))
}

pub(crate) fn waker_token() -> Token {
    token(Kind::Waker, FlowId { index: 0, gen: 0 })
}

/// The kind and flow of a token (`None` for a token we never made).
pub(crate) fn decode(t: Token) -> Option<(Kind, FlowId)> {
    let kind = match t.0 & ((1 << KIND_BITS) - 1) {
        KIND_WAKER => Kind::Waker,
        KIND_FLOW => Kind::Flow,
        KIND_SERVE => Kind::Serve,
        _ => return None,
    };
    let index = u32::try_from((t.0 >> KIND_BITS) & ((1 << INDEX_BITS) - 1)).ok()?;
    let gen = u32::try_from(t.0 >> (KIND_BITS + INDEX_BITS)).ok()?;
    Some((kind, FlowId { index, gen }))
}

struct Slot<T> {
    gen: u32,
    value: Option<T>,
}

/// Flows by slot, with generations.
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The id the next `insert` will return.
    pub fn next_id(&self) -> FlowId {
        match self.free.last() {
            Some(&index) => FlowId {
                index,
                gen: self.slots.get(index as usize).map_or(0, |s| s.gen),
            },
            None => FlowId {
                index: u32::try_from(self.slots.len()).unwrap_or(u32::MAX),
                gen: 0,
            },
        }
    }

    pub fn insert(&mut self, value: T) -> FlowId {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            if let Some(slot) = self.slots.get_mut(index as usize) {
                slot.value = Some(value);
                return FlowId {
                    index,
                    gen: slot.gen,
                };
            }
        }
        let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot {
            gen: 0,
            value: Some(value),
        });
        FlowId { index, gen: 0 }
    }

    #[cfg(test)]
    pub fn get(&self, id: FlowId) -> Option<&T> {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.gen == id.gen)
            .and_then(|s| s.value.as_ref())
    }

    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut T> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|s| s.gen == id.gen)
            .and_then(|s| s.value.as_mut())
    }

    pub fn remove(&mut self, id: FlowId) -> Option<T> {
        let slot = self
            .slots
            .get_mut(id.index as usize)
            .filter(|s| s.gen == id.gen)?;
        let v = slot.value.take()?;
        // Generations wrap within the token's bits; a stale token 2^28 flows old is the
        // only way to confuse them.
        slot.gen = slot.gen.wrapping_add(1) & ((1 << GEN_BITS) - 1);
        self.free.push(id.index);
        self.len -= 1;
        Some(v)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.value.as_ref())
    }

    pub fn ids(&self) -> Vec<FlowId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.value.is_some())
            .filter_map(|(i, s)| {
                Some(FlowId {
                    index: u32::try_from(i).ok()?,
                    gen: s.gen,
                })
            })
            .collect()
    }
}

/// Deadlines of flows. Lazy: an entry is valid only if the flow still has exactly that
/// deadline scheduled (`Flow::timer_at`); others are skipped when they come up.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, FlowId)>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, id: FlowId) {
        self.heap.push(Reverse((at, id)));
    }

    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The earliest entry due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, FlowId)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tokens_roundtrip() {
        for (kind, index, gen) in [
            (Kind::Flow, 0, 0),
            (Kind::Flow, 7, 3),
            (Kind::Serve, 9, 1),
            (Kind::Flow, u32::MAX, (1 << GEN_BITS) - 1),
            (Kind::Waker, 0, 0),
        ] {
            let id = FlowId { index, gen };
            assert_eq!(decode(token(kind, id)), Some((kind, id)));
        }
        assert_eq!(decode(Token(0)), None);
        assert_eq!(decode(Token(usize::MAX)), None);
        assert_eq!(decode(waker_token()).map(|(k, _)| k), Some(Kind::Waker));
    }

    #[test]
    fn slab_generations() {
        let mut s = Slab::new();
        let n = s.next_id();
        let a = s.insert("a");
        assert_eq!(n, a);
        let b = s.insert("b");
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(a), None);
        let n = s.next_id();
        let c = s.insert("c");
        assert_eq!(n, c);
        assert_eq!(c.index, a.index);
        assert_ne!(c.gen, a.gen);
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(c), Some(&"c"));
        *s.get_mut(b).unwrap() = "B";
        let mut all: Vec<_> = s.iter().copied().collect();
        all.sort_unstable();
        assert_eq!(all, vec!["B", "c"]);
        assert_eq!(s.ids().len(), 2);
    }

    #[test]
    fn timers_pop_in_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let id = |i| FlowId { index: i, gen: 0 };
        t.push(t0 + Duration::from_secs(3), id(3));
        t.push(t0 + Duration::from_secs(1), id(1));
        t.push(t0 + Duration::from_secs(2), id(2));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(t.pop_due(now).map(|e| e.1), Some(id(1)));
        assert_eq!(t.pop_due(now).map(|e| e.1), Some(id(2)));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(t.len(), 1);
    }
}
