//! Per-vhost route index: the routes whose URI condition can hold for a request path, so that
//! only those are evaluated in full. Built once with the route table (immutable, swapped with
//! it), queried without allocation.
//!
//! Every route is one match block (compile expands a rule's blocks in Istio's order), with one
//! URI condition (a block without one is `prefix: /`). The index keeps:
//! - a byte trie of case-sensitive `exact` and `prefix` URIs, and of the literal prefixes every
//!   match of a `regex` URI must start with (regex-syntax's prefix extraction);
//! - a second trie of `ignoreUriCase` URIs, lower-cased, walked with the path lower-cased;
//! - the regex routes with no usable literal prefix (`.*x`), behind one `RegexSet` that says
//!   whether any of them can match.
//!
//! A walk collects, per trie node on the path, the ids of the routes whose prefix ends there
//! (and, at the end of the path, the exact ones); each list is sorted. First match wins is kept
//! by taking the lowest id that passes the full match: each list is scanned in order and stops
//! at the first pass or at the lowest passing id found so far. Conditions other than the URI
//! (method, headers, query, authority, scheme) are only checked on those candidates, so a vhost
//! whose routes differ only by them (all `prefix: /`) still costs a linear scan.

use std::collections::BTreeMap;

use regex::RegexSet;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::plan::http as p;

/// Index of one vhost's routes, by position in its route list.
#[derive(Debug, Default)]
pub struct RouteIndex {
    cased: Trie,
    /// `ignoreUriCase` exact and prefix URIs, lower-cased.
    folded: Trie,
    /// Regex routes without a literal prefix: always candidates (when `gate` allows).
    unindexed: Vec<u32>,
    /// Matches when any regex of `unindexed` does; None when it could not be built.
    gate: Option<RegexSet>,
    routes: usize,
    /// Routes that are candidates for any path (`prefix: /`, unindexed regexes).
    broad: usize,
}

impl RouteIndex {
    /// `paths`: each route's URI condition and `ignoreUriCase`, in route order.
    pub fn build<'a>(paths: impl IntoIterator<Item = (&'a p::PathMatch, bool)>) -> RouteIndex {
        let mut cased = TrieBuilder::default();
        let mut folded = TrieBuilder::default();
        let mut unindexed = Vec::new();
        let mut unindexed_res = Vec::new();
        let (mut routes, mut broad) = (0, 0);
        for (id, (path, ignore_case)) in paths.into_iter().enumerate() {
            let id = u32::try_from(id).expect("routes per vhost fit u32");
            routes += 1;
            if matches!(path, p::PathMatch::Prefix(s) if s.is_empty() || s == "/") {
                broad += 1;
            }
            match path {
                p::PathMatch::Exact(s) if ignore_case => {
                    folded.insert(&s.to_ascii_lowercase().into_bytes(), id, true)
                }
                p::PathMatch::Prefix(s) if ignore_case => {
                    folded.insert(&s.to_ascii_lowercase().into_bytes(), id, false)
                }
                p::PathMatch::Exact(s) => cased.insert(s.as_bytes(), id, true),
                p::PathMatch::Prefix(s) => cased.insert(s.as_bytes(), id, false),
                // ignoreUriCase does not apply to regex (as in the router).
                p::PathMatch::Regex(re) => {
                    let anchored = crate::config::syntax::anchored(re);
                    match regex_prefixes(&anchored) {
                        Some(prefixes) => {
                            for lit in prefixes {
                                cased.insert(&lit, id, false);
                            }
                        }
                        None => {
                            broad += 1;
                            unindexed.push(id);
                            unindexed_res.push(anchored);
                        }
                    }
                }
            }
        }
        // One scan of the path says whether any unindexed regex can match; with a single one
        // the route's own regex is as cheap.
        let gate = if unindexed_res.len() > 1 {
            RegexSet::new(&unindexed_res).ok()
        } else {
            None
        };
        RouteIndex {
            cased: cased.finish(),
            folded: folded.finish(),
            unindexed,
            gate,
            routes,
            broad,
        }
    }

    /// Whether the index leaves out enough routes to beat the linear scan: walking it and then
    /// scanning candidates nearly all routes costs more than scanning them all.
    pub fn narrows(&self) -> bool {
        self.broad * 5 < self.routes * 4
    }

    /// The lowest route id for which `matches` holds, among the routes whose URI condition can
    /// hold for `path`: the linear scan's answer, as every other route fails its URI condition.
    pub fn first_match(&self, path: &str, mut matches: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut best = u32::MAX;
        let mut scan = |ids: &[u32]| {
            for &id in ids {
                if id >= best {
                    break;
                }
                if matches(id as usize) {
                    best = id;
                    break;
                }
            }
            best
        };
        let bytes = path.as_bytes();
        self.cased.walk(bytes, false, &mut scan);
        self.folded.walk(bytes, true, &mut scan);
        let mut found = scan(&[]);
        if self.unindexed.first().is_some_and(|&id| id < found)
            && self.gate.as_ref().is_none_or(|g| g.is_match(path))
        {
            found = scan(&self.unindexed);
        }
        (found != u32::MAX).then_some(found as usize)
    }
}

/// Byte strings one of which starts every match of `pattern` (already anchored), or None when
/// there is no finite set (then the route is always a candidate). A pattern that fails to parse
/// is always a candidate too: the router decides what it matches.
fn regex_prefixes(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::parse(pattern).ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    // An empty finite set (a regex that matches nothing) gives no candidate at all.
    Some(
        seq.literals()?
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect(),
    )
}

#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of<T>(v: &[T], start: usize) -> Span {
        Span {
            start: start as u32,
            len: (v.len() - start) as u32,
        }
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

/// A path-compressed byte trie, flattened into arrays (no pointer chasing through boxes).
#[derive(Debug, Clone, Copy, Default)]
struct Node {
    /// Bytes on the edge into this node (empty for the root).
    label: Span,
    /// Into `Trie::child_first` / `child_node`, sorted by first byte.
    children: Span,
    /// Into `Trie::ids`: routes whose prefix ends here.
    prefix: Span,
    /// Into `Trie::ids`: routes whose exact URI ends here.
    exact: Span,
}

#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
    labels: Vec<u8>,
    child_first: Vec<u8>,
    child_node: Vec<u32>,
    ids: Vec<u32>,
}

impl Trie {
    /// Calls `visit` with the ids of every node the path passes through, root first; `fold`:
    /// compare ASCII case-insensitively (the labels are lower-case).
    fn walk(&self, path: &[u8], fold: bool, visit: &mut impl FnMut(&[u32]) -> u32) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut pos = 0;
        loop {
            if node.prefix.len > 0 {
                visit(&self.ids[node.prefix.range()]);
            }
            if pos == path.len() {
                if node.exact.len > 0 {
                    visit(&self.ids[node.exact.range()]);
                }
                return;
            }
            let b = if fold {
                path[pos].to_ascii_lowercase()
            } else {
                path[pos]
            };
            let cs = node.children.range();
            let Ok(k) = self.child_first[cs.clone()].binary_search(&b) else {
                return;
            };
            let child = &self.nodes[self.child_node[cs.start + k] as usize];
            let label = &self.labels[child.label.range()];
            let Some(rest) = path.get(pos..pos + label.len()) else {
                return;
            };
            let same = if fold {
                rest.eq_ignore_ascii_case(label)
            } else {
                rest == label
            };
            if !same {
                return;
            }
            pos += label.len();
            node = child;
        }
    }
}

#[derive(Debug, Default)]
struct BuildNode {
    children: BTreeMap<u8, usize>,
    prefix: Vec<u32>,
    exact: Vec<u32>,
}

#[derive(Debug)]
struct TrieBuilder {
    nodes: Vec<BuildNode>,
}

impl Default for TrieBuilder {
    fn default() -> Self {
        TrieBuilder {
            nodes: vec![BuildNode::default()],
        }
    }
}

impl TrieBuilder {
    /// Ids arrive in increasing order, so every list stays sorted.
    fn insert(&mut self, key: &[u8], id: u32, exact: bool) {
        let mut n = 0;
        for &b in key {
            n = match self.nodes[n].children.get(&b) {
                Some(&c) => c,
                None => {
                    let c = self.nodes.len();
                    self.nodes.push(BuildNode::default());
                    self.nodes[n].children.insert(b, c);
                    c
                }
            };
        }
        let list = if exact {
            &mut self.nodes[n].exact
        } else {
            &mut self.nodes[n].prefix
        };
        if list.last() != Some(&id) {
            list.push(id);
        }
    }

    /// Flattens, merging chains of single-child nodes without routes into one edge. Iterative:
    /// a long exact URI must not cost stack depth.
    fn finish(self) -> Trie {
        let mut t = Trie::default();
        if self.nodes.len() == 1
            && self.nodes[0].prefix.is_empty()
            && self.nodes[0].exact.is_empty()
        {
            return t;
        }
        t.nodes.push(Node::default());
        let mut work = vec![(0usize, 0usize)];
        while let Some((b, f)) = work.pop() {
            let bn = &self.nodes[b];
            let start = t.ids.len();
            t.ids.extend_from_slice(&bn.prefix);
            t.nodes[f].prefix = Span::of(&t.ids, start);
            let start = t.ids.len();
            t.ids.extend_from_slice(&bn.exact);
            t.nodes[f].exact = Span::of(&t.ids, start);
            let first_child = t.child_node.len();
            for (&byte, &c) in &bn.children {
                let label_start = t.labels.len();
                t.labels.push(byte);
                let mut c = c;
                loop {
                    let cn = &self.nodes[c];
                    if !cn.prefix.is_empty() || !cn.exact.is_empty() || cn.children.len() != 1 {
                        break;
                    }
                    let (&nb, &nc) = cn.children.iter().next().expect("one child");
                    t.labels.push(nb);
                    c = nc;
                }
                let fi = t.nodes.len();
                t.nodes.push(Node {
                    label: Span::of(&t.labels, label_start),
                    ..Node::default()
                });
                t.child_first.push(byte);
                t.child_node.push(fi as u32);
                work.push((c, fi));
            }
            t.nodes[f].children = Span::of(&t.child_node, first_child);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::RouteIndex;
    use crate::plan::http as p;

    fn ids(idx: &RouteIndex, path: &str) -> Vec<usize> {
        // Every candidate, in the order the index offers them.
        let mut seen = Vec::new();
        idx.first_match(path, |i| {
            seen.push(i);
            false
        });
        seen.sort_unstable();
        seen.dedup();
        seen
    }

    #[test]
    fn candidates_by_uri() {
        let routes = [
            (p::PathMatch::Exact("/a/b".into()), false),
            (p::PathMatch::Prefix("/a".into()), false),
            (p::PathMatch::Prefix("/A/B".into()), true),
            (p::PathMatch::Exact("/X".into()), true),
            (p::PathMatch::Regex("/re/[0-9]+".into()), false),
            (p::PathMatch::Regex(".*z".into()), false),
            (p::PathMatch::Regex("[^\\s\\S]".into()), false),
            (p::PathMatch::Prefix("/".into()), false),
        ];
        let idx = RouteIndex::build(routes.iter().map(|(p, i)| (p, *i)));
        assert!(idx.narrows());
        // The single unindexed regex (5) has no gate: a candidate whatever the path; the one
        // that matches nothing (6) never is.
        assert_eq!(ids(&idx, "/a/b"), vec![0, 1, 2, 5, 7]);
        assert_eq!(ids(&idx, "/a/bc"), vec![1, 2, 5, 7]);
        assert_eq!(ids(&idx, "/x"), vec![3, 5, 7]);
        assert_eq!(ids(&idx, "/xy"), vec![5, 7]);
        assert_eq!(ids(&idx, "/re/12"), vec![4, 5, 7]);
        assert_eq!(ids(&idx, "/rx"), vec![5, 7]);
        assert_eq!(ids(&idx, "q"), vec![5]);
    }

    #[test]
    fn first_match_is_lowest_passing_id() {
        let routes = [
            (p::PathMatch::Prefix("/".into()), false),
            (p::PathMatch::Prefix("/api/".into()), false),
            (p::PathMatch::Exact("/api/v1".into()), false),
        ];
        let idx = RouteIndex::build(routes.iter().map(|(p, i)| (p, *i)));
        assert_eq!(idx.first_match("/api/v1", |_| true), Some(0));
        assert_eq!(idx.first_match("/api/v1", |i| i > 0), Some(1));
        assert_eq!(idx.first_match("/api/v1", |i| i == 2), Some(2));
        assert_eq!(idx.first_match("/api/v1", |_| false), None);
    }

    #[test]
    fn gate_skips_unindexed_regexes() {
        let routes = [
            (p::PathMatch::Regex(".*/a".into()), false),
            (p::PathMatch::Regex(".*/b".into()), false),
        ];
        let idx = RouteIndex::build(routes.iter().map(|(p, i)| (p, *i)));
        assert!(idx.gate.is_some());
        assert!(!idx.narrows());
        assert_eq!(ids(&idx, "/x/a"), vec![0, 1]);
        assert_eq!(ids(&idx, "/x/c"), Vec::<usize>::new());
    }
}
