//! The prompt store: KV states of conversations that lost their slot, kept in host memory within
//! a byte budget, so that a request continuing one of them is restored instead of recomputed.
//! Least recently stored or used entries go first; an entry another one extends is dropped.

use super::evaluator::SavedState;

/// Fewest tokens worth keeping: shorter prefixes are cheaper to recompute than to copy.
pub(crate) const MIN_STORED_TOKENS: usize = 32;

/// One stored conversation: its tokens and the engine's copy of their KV state.
pub(crate) struct StoredPrompt {
    pub tokens: Vec<u32>,
    pub state: SavedState,
    /// Unique, and larger for later entries (also the least-recent order).
    id: u64,
}

/// Stored prompts within a byte budget.
pub(crate) struct PromptStore {
    budget: usize,
    used: usize,
    entries: Vec<StoredPrompt>,
    clock: u64,
}

impl PromptStore {
    /// An empty store that never holds more than `budget` bytes (0: stores nothing).
    pub fn new(budget: usize) -> Self {
        PromptStore {
            budget,
            used: 0,
            entries: Vec::new(),
            clock: 0,
        }
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Whether `tokens` are worth saving: long enough, within the budget's reach, and not
    /// already held (as themselves or the start of a longer entry).
    pub fn wants(&self, tokens: &[u32]) -> bool {
        self.budget > 0
            && tokens.len() >= MIN_STORED_TOKENS
            && !self.entries.iter().any(|e| e.tokens.starts_with(tokens))
    }

    /// Keep `state` for `tokens`, dropping the entries it extends, then the least recently
    /// used ones until it fits. A state larger than the whole budget is not kept.
    pub fn insert(&mut self, tokens: Vec<u32>, state: SavedState) {
        if state.bytes > self.budget {
            return;
        }
        let mut i = 0;
        while i < self.entries.len() {
            if tokens.starts_with(&self.entries[i].tokens) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        while self.used + state.bytes > self.budget && !self.entries.is_empty() {
            // Entries are in insertion order: the first is the least recent.
            self.remove(0);
        }
        self.clock += 1;
        self.used += state.bytes;
        self.entries.push(StoredPrompt {
            tokens,
            state,
            id: self.clock,
        });
    }

    /// The id of the entry sharing the longest prefix with `prompt`, and that length.
    pub fn best(&self, prompt: &[u32]) -> Option<(u64, usize)> {
        self.entries
            .iter()
            .map(|e| (e.id, common_prefix(&e.tokens, prompt)))
            .max_by_key(|&(_, common)| common)
            .filter(|&(_, common)| common > 0)
    }

    /// Take out the entry `id` (to restore it into a slot), if it is still held.
    pub fn take(&mut self, id: u64) -> Option<StoredPrompt> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        Some(self.remove(i))
    }

    fn remove(&mut self, i: usize) -> StoredPrompt {
        let entry = self.entries.remove(i);
        self.used -= entry.state.bytes;
        entry
    }
}

/// Length of the common prefix of two token lists.
pub(crate) fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(bytes: usize) -> SavedState {
        SavedState {
            bytes,
            data: Box::new(()),
        }
    }

    fn tokens(first: u32, len: usize) -> Vec<u32> {
        (first..first + len as u32).collect()
    }

    #[test]
    fn the_store_keeps_within_its_budget_dropping_the_least_recent() {
        let mut store = PromptStore::new(1000);
        store.insert(tokens(0, 40), state(400));
        store.insert(tokens(100, 40), state(400));
        store.insert(tokens(200, 40), state(400));
        assert_eq!(store.used(), 800);
        assert_eq!(store.best(&tokens(0, 50)), None, "the oldest went");
        assert_eq!(store.best(&tokens(200, 50)).map(|b| b.1), Some(40));
        // Too big for the whole budget: not kept, nothing dropped.
        store.insert(tokens(300, 40), state(1001));
        assert_eq!(store.used(), 800);
    }

    #[test]
    fn an_extended_conversation_replaces_its_start() {
        let mut store = PromptStore::new(10_000);
        store.insert(tokens(0, 40), state(400));
        assert!(
            !store.wants(&tokens(0, 35)),
            "held as the start of an entry"
        );
        assert!(!store.wants(&tokens(0, 8)), "too short to be worth it");
        assert!(store.wants(&tokens(0, 60)));
        store.insert(tokens(0, 60), state(600));
        assert_eq!(store.used(), 600);
        let (id, common) = store.best(&tokens(0, 80)).unwrap();
        assert_eq!(common, 60);
        assert_eq!(store.take(id).unwrap().tokens.len(), 60);
        assert!(store.take(id).is_none());
        assert_eq!(store.used(), 0);
    }
}
