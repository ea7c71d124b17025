//! Node storage shared by the two tries (`subscriptions`, `retained`): nodes live in one
//! `Vec` and refer to each other by index, so walks need no recursion and no reference
//! counting, and freed slots are reused rather than shrinking the vector.

use std::ops::{Index, IndexMut};

#[derive(Debug)]
pub(crate) struct Arena<T> {
    nodes: Vec<T>,
    free: Vec<usize>,
}

impl<T> Arena<T> {
    /// An arena holding only `root`, at index 0.
    pub fn new(root: T) -> Self {
        Arena {
            nodes: vec![root],
            free: Vec::new(),
        }
    }

    /// Stores `node` in a free slot, or a new one; returns its index.
    pub fn alloc(&mut self, node: T) -> usize {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id] = node;
                id
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    /// Frees slot `id`, replacing its node with `empty` so that the node's own memory
    /// (its child map) is given back now.
    pub fn release(&mut self, id: usize, empty: T) {
        self.nodes[id] = empty;
        self.free.push(id);
    }

    /// Nodes in use, the root included.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Slots ever allocated, free ones included.
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }
}

impl<T> Index<usize> for Arena<T> {
    type Output = T;

    fn index(&self, id: usize) -> &T {
        &self.nodes[id]
    }
}

impl<T> IndexMut<usize> for Arena<T> {
    fn index_mut(&mut self, id: usize) -> &mut T {
        &mut self.nodes[id]
    }
}
