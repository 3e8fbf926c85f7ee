//! The grace queue: reverts waiting out a grace period, during which a new
//! commit may adopt the change and cancel them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// Pending items, each due at a time; items due at the same time come out in
/// the order they were pushed.
#[derive(Debug, Clone)]
pub struct Grace<T> {
    pending: BTreeMap<(DateTime<Utc>, u64), T>,
    pushed: u64,
}

impl<T> Default for Grace<T> {
    fn default() -> Self {
        Self {
            pending: BTreeMap::new(),
            pushed: 0,
        }
    }
}

impl<T> Grace<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `item` until `due`.
    pub fn push(&mut self, due: DateTime<Utc>, item: T) {
        self.pending.insert((due, self.pushed), item);
        self.pushed += 1;
    }

    /// Takes every item due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<T> {
        let first_later = self.pending.keys().find(|(due, _)| *due > now).copied();
        let later = match first_later {
            Some(first_later) => self.pending.split_off(&first_later),
            None => BTreeMap::new(),
        };
        std::mem::replace(&mut self.pending, later)
            .into_values()
            .collect()
    }

    /// Takes every item for which `cancel` is true (e.g. a commit adopted
    /// the change), in due order.
    pub fn remove_where(&mut self, mut cancel: impl FnMut(&T) -> bool) -> Vec<T> {
        let (removed, kept) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, item)| cancel(item));
        self.pending = kept;
        removed.into_values().collect()
    }

    /// The waiting items, to update in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.pending.values_mut()
    }

    /// When the earliest item is due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.pending.keys().next().map(|(due, _)| *due)
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    #[test]
    fn items_come_out_when_due_in_due_then_push_order() {
        let mut grace = Grace::new();
        grace.push(t(30), "c");
        grace.push(t(10), "a");
        grace.push(t(10), "b");
        grace.push(t(20), "bb");
        assert_eq!(grace.next_due(), Some(t(10)));
        assert_eq!(grace.pop_due(t(9)), Vec::<&str>::new());
        assert_eq!(grace.pop_due(t(20)), ["a", "b", "bb"], "due is inclusive");
        assert_eq!(grace.next_due(), Some(t(30)));
        assert_eq!(grace.len(), 1);
        assert_eq!(grace.pop_due(t(100)), ["c"]);
        assert!(grace.is_empty());
        assert_eq!(grace.next_due(), None);
    }

    #[test]
    fn cancelled_items_never_come_out() {
        let mut grace = Grace::new();
        grace.push(t(10), ("web", 1));
        grace.push(t(11), ("db", 2));
        grace.push(t(12), ("web", 3));
        let removed = grace.remove_where(|(name, _)| *name == "web");
        assert_eq!(removed, [("web", 1), ("web", 3)]);
        assert_eq!(grace.next_due(), Some(t(11)));
        assert_eq!(grace.pop_due(t(100)), [("db", 2)]);
    }
}
