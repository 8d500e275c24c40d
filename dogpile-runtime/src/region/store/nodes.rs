//! The keys a bounded store holds, in the order its policy visits them: two circular lists (the
//! window and the main ring) threaded through one dense vector of nodes.
//!
//! A node is its key and two 32-bit links; the top bit of `next` says which list it is on.
//! Removing a node moves the last one into its place, so the vector holds exactly the live keys
//! and every operation is O(1); the caller is told which key moved, to update the index its map
//! entry keeps.

/// "No node".
pub(super) const NIL: u32 = u32::MAX;

/// The most nodes: the links keep their top bit for the list.
pub(super) const MAX_NODES: usize = 1 << 31;

const MAIN_BIT: u32 = 1 << 31;

/// Which list a node is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum List {
    /// New keys, in arrival order (first in, first out).
    Window,
    /// Admitted keys, visited by a CLOCK hand.
    Main,
}

struct Node<K> {
    key: K,
    prev: u32,
    /// The next node, with [`MAIN_BIT`] set on the main list.
    next: u32,
}

impl<K> Node<K> {
    fn next(&self) -> u32 {
        self.next & !MAIN_BIT
    }

    fn list(&self) -> List {
        if self.next & MAIN_BIT == 0 {
            List::Window
        } else {
            List::Main
        }
    }

    fn set_next(&mut self, next: u32) {
        self.next = (self.next & MAIN_BIT) | next;
    }
}

/// One circular list: its first node (the oldest, where the hand stands), its length and weight.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ring {
    pub(super) head: u32,
    pub(super) len: usize,
    pub(super) weight: u64,
}

impl Ring {
    const EMPTY: Ring = Ring {
        head: NIL,
        len: 0,
        weight: 0,
    };
}

pub(super) struct Nodes<K> {
    nodes: Vec<Node<K>>,
    /// Parallel to `nodes` when entries have weights; empty when each weighs 1.
    weights: Vec<u32>,
    weighted: bool,
    window: Ring,
    main: Ring,
}

impl<K> Nodes<K> {
    pub(super) fn new(weighted: bool) -> Self {
        Nodes {
            nodes: Vec::new(),
            weights: Vec::new(),
            weighted,
            window: Ring::EMPTY,
            main: Ring::EMPTY,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(super) fn ring(&self, list: List) -> &Ring {
        match list {
            List::Window => &self.window,
            List::Main => &self.main,
        }
    }

    fn ring_mut(&mut self, list: List) -> &mut Ring {
        match list {
            List::Window => &mut self.window,
            List::Main => &mut self.main,
        }
    }

    pub(super) fn key(&self, node: u32) -> &K {
        &self.nodes[node as usize].key
    }

    #[cfg(test)]
    pub(super) fn list(&self, node: u32) -> List {
        self.nodes[node as usize].list()
    }

    pub(super) fn weight(&self, node: u32) -> u64 {
        if self.weighted {
            u64::from(self.weights[node as usize])
        } else {
            1
        }
    }

    /// Adds `key` at the end of `list` (just behind the hand, on the main list); its index.
    pub(super) fn push(&mut self, key: K, weight: u32, list: List) -> u32 {
        debug_assert!(self.nodes.len() < MAX_NODES);
        let node = self.nodes.len() as u32;
        self.nodes.push(Node {
            key,
            prev: node,
            next: node,
        });
        if self.weighted {
            self.weights.push(weight);
        }
        self.link(node, list);
        node
    }

    /// Moves `node` to the end of `list`.
    pub(super) fn relink(&mut self, node: u32, list: List) {
        self.unlink(node);
        self.link(node, list);
    }

    /// Changes `node`'s weight.
    pub(super) fn reweigh(&mut self, node: u32, weight: u32) {
        if self.weighted {
            let old = std::mem::replace(&mut self.weights[node as usize], weight);
            let ring = self.ring_mut(self.nodes[node as usize].list());
            ring.weight = ring.weight - u64::from(old) + u64::from(weight);
        }
    }

    /// Moves the hand of `list` one node on: its first node becomes its last.
    pub(super) fn rotate(&mut self, list: List) {
        let head = self.ring(list).head;
        if head != NIL {
            let next = self.nodes[head as usize].next();
            self.ring_mut(list).head = next;
        }
    }

    /// Removes `node`; its key, and the key that moved into its index, if one did.
    pub(super) fn remove(&mut self, node: u32) -> (K, Option<&K>) {
        self.unlink(node);
        let last = (self.nodes.len() - 1) as u32;
        let removed = self.nodes.swap_remove(node as usize);
        if self.weighted {
            self.weights.swap_remove(node as usize);
        }
        if node == last {
            return (removed.key, None);
        }
        // The last node now sits at `node`: point its neighbours (and its list) at it.
        let moved = &mut self.nodes[node as usize];
        if moved.prev == last {
            moved.prev = node;
        }
        if moved.next() == last {
            moved.set_next(node);
        }
        let (prev, next, list) = (moved.prev, moved.next(), moved.list());
        self.nodes[prev as usize].set_next(node);
        self.nodes[next as usize].prev = node;
        let ring = self.ring_mut(list);
        if ring.head == last {
            ring.head = node;
        }
        (removed.key, Some(&self.nodes[node as usize].key))
    }

    /// Removes every node; their keys.
    pub(super) fn take_all(&mut self) -> Vec<K> {
        self.window = Ring::EMPTY;
        self.main = Ring::EMPTY;
        self.weights = Vec::new();
        std::mem::take(&mut self.nodes)
            .into_iter()
            .map(|node| node.key)
            .collect()
    }

    fn link(&mut self, node: u32, list: List) {
        let weight = self.weight(node);
        let ring = self.ring_mut(list);
        let head = ring.head;
        ring.len += 1;
        ring.weight += weight;
        if head == NIL {
            ring.head = node;
        }
        let (prev, next) = if head == NIL {
            (node, node)
        } else {
            (self.nodes[head as usize].prev, head)
        };
        let tag = match list {
            List::Window => 0,
            List::Main => MAIN_BIT,
        };
        let this = &mut self.nodes[node as usize];
        this.prev = prev;
        this.next = next | tag;
        self.nodes[prev as usize].set_next(node);
        self.nodes[next as usize].prev = node;
    }

    fn unlink(&mut self, node: u32) {
        let weight = self.weight(node);
        let this = &self.nodes[node as usize];
        let (prev, next, list) = (this.prev, this.next(), this.list());
        let ring = self.ring_mut(list);
        ring.len -= 1;
        ring.weight -= weight;
        if next == node {
            ring.head = NIL;
        } else {
            if ring.head == node {
                ring.head = next;
            }
            self.nodes[prev as usize].set_next(next);
            self.nodes[next as usize].prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of `list` from its hand on.
    fn keys(nodes: &Nodes<u32>, list: List) -> Vec<u32> {
        let ring = nodes.ring(list);
        let mut out = Vec::new();
        let mut at = ring.head;
        for _ in 0..ring.len {
            out.push(*nodes.key(at));
            assert_eq!(nodes.list(at), list);
            let next = nodes.nodes[at as usize].next();
            assert_eq!(nodes.nodes[next as usize].prev, at, "links agree");
            at = next;
        }
        assert_eq!(at, ring.head, "the list is a circle of its length");
        out
    }

    #[test]
    fn lists_keep_their_order_through_moves_and_removals() {
        let mut nodes = Nodes::new(false);
        let a = nodes.push(1, 1, List::Window);
        nodes.push(2, 1, List::Window);
        let c = nodes.push(3, 1, List::Main);
        nodes.push(4, 1, List::Main);
        assert_eq!(keys(&nodes, List::Window), [1, 2]);
        assert_eq!(keys(&nodes, List::Main), [3, 4]);

        nodes.relink(a, List::Main);
        assert_eq!(keys(&nodes, List::Window), [2]);
        assert_eq!(keys(&nodes, List::Main), [3, 4, 1]);

        nodes.rotate(List::Main);
        assert_eq!(keys(&nodes, List::Main), [4, 1, 3]);

        // Removing 3 moves the last node (key 4, index 3) into index 2.
        let (removed, moved) = nodes.remove(c);
        assert_eq!((removed, moved.copied()), (3, Some(4)));
        assert_eq!(*nodes.key(c), 4);
        assert_eq!(keys(&nodes, List::Main), [4, 1]);
        assert_eq!(keys(&nodes, List::Window), [2]);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes.ring(List::Main).weight, 2);
    }

    #[test]
    fn a_node_alone_on_its_list_can_move_into_a_hole() {
        let mut nodes = Nodes::new(false);
        let a = nodes.push(1, 1, List::Window);
        nodes.push(2, 1, List::Main);
        let (removed, moved) = nodes.remove(a);
        assert_eq!((removed, moved.copied()), (1, Some(2)));
        assert_eq!(keys(&nodes, List::Main), [2]);
        assert!(keys(&nodes, List::Window).is_empty());
        let (removed, moved) = nodes.remove(0);
        assert_eq!((removed, moved.copied()), (2, None));
        assert_eq!(nodes.ring(List::Main).head, NIL);
    }

    #[test]
    fn weights_follow_their_nodes() {
        let mut nodes = Nodes::new(true);
        let a = nodes.push(1, 10, List::Window);
        let b = nodes.push(2, 20, List::Window);
        nodes.relink(b, List::Main);
        nodes.reweigh(b, 25);
        assert_eq!(nodes.ring(List::Window).weight, 10);
        assert_eq!(nodes.ring(List::Main).weight, 25);
        nodes.remove(a);
        assert_eq!(nodes.weight(0), 25, "the moved node keeps its weight");
        assert_eq!(nodes.ring(List::Window).weight, 0);
        assert_eq!(nodes.take_all(), [2]);
        assert_eq!(nodes.ring(List::Main).len, 0);
    }

    #[test]
    fn random_operations_keep_the_lists_consistent() {
        let mut nodes = Nodes::new(true);
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next_key = 0;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = nodes.len() as u32;
            match x % 5 {
                0 | 1 => {
                    let list = if x & 8 == 0 { List::Window } else { List::Main };
                    nodes.push(next_key, (x >> 8) as u32 % 7, list);
                    next_key += 1;
                }
                2 if len > 0 => {
                    nodes.remove((x >> 16) as u32 % len);
                }
                3 if len > 0 => {
                    let list = if x & 8 == 0 { List::Window } else { List::Main };
                    nodes.relink((x >> 16) as u32 % len, list);
                }
                _ => nodes.rotate(List::Main),
            }
            let window = keys(&nodes, List::Window).len();
            let main = keys(&nodes, List::Main).len();
            assert_eq!(window + main, nodes.len());
            let weight: u64 = (0..nodes.len() as u32).map(|n| nodes.weight(n)).sum();
            assert_eq!(
                nodes.ring(List::Window).weight + nodes.ring(List::Main).weight,
                weight
            );
        }
    }
}
