//! A compact HNSW graph (Malkov & Yashunin, 2018) over L2-normalised vectors, scored
//! by inner product (= cosine). Insert-only; removal is a tombstone the owner applies
//! at search time, and the owner rebuilds the graph when tombstones pile up.
//!
//! The walk compares int8 codes (a quarter of f32's memory traffic); the final
//! candidates are re-scored with the exact f32 vectors.
//!
//! Written here rather than taken from a crate: the pure-Rust HNSW crates either build
//! once and cannot insert (instant-distance), or pull in a heavy tree (hnsw_rs: rayon,
//! mmap, loggers), or need integer distances (rust-cv's hnsw); the cache needs
//! incremental inserts, f32 cosine and a filter, in a few hundred lines with no
//! dependency.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Inner product, with eight independent accumulators so the compiler vectorises it.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        let (x, y) = (&a[i * 8..i * 8 + 8], &b[i * 8..i * 8 + 8]);
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// Inner product of two int8 codes.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let chunks = a.len() / 16;
    for i in 0..chunks {
        let (x, y) = (&a[i * 16..i * 16 + 16], &b[i * 16..i * 16 + 16]);
        for j in 0..16 {
            acc[j] += i32::from(x[j]) * i32::from(y[j]);
        }
    }
    let mut s: i32 = acc.iter().sum();
    for i in chunks * 16..a.len() {
        s += i32::from(a[i]) * i32::from(b[i]);
    }
    s
}

/// Symmetric int8 quantisation with a per-vector scale: a quarter of the memory of
/// f32, so a graph walk over 100k vectors touches a quarter of the cache lines.
fn quantise(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return (vec![0; v.len()], 0.0);
    }
    let k = 127.0 / max;
    (
        v.iter().map(|x| (x * k).round() as i8).collect(),
        max / 127.0,
    )
}

/// A query prepared for the walk: its code and scale.
struct Query<'a> {
    exact: &'a [f32],
    code: Vec<i8>,
    scale: f32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Scored {
    dist: f32,
    id: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, o: &Self) -> Ordering {
        self.dist.total_cmp(&o.dist).then(self.id.cmp(&o.id))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The graph. Node ids are dense, in insertion order.
#[derive(Debug, Clone)]
pub(crate) struct Hnsw {
    dim: usize,
    m: usize,
    m0: usize,
    ef_construction: usize,
    level_mult: f64,
    vectors: Vec<f32>,
    codes: Vec<i8>,
    scales: Vec<f32>,
    links: Vec<Vec<Vec<u32>>>,
    entry: Option<u32>,
    max_level: usize,
    rng: u64,
}

impl Hnsw {
    pub(crate) fn new(dim: usize) -> Self {
        let m = 16;
        Self {
            dim,
            m,
            m0: 2 * m,
            ef_construction: 80,
            level_mult: 1.0 / (m as f64).ln(),
            vectors: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            links: Vec::new(),
            entry: None,
            max_level: 0,
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    pub(crate) fn vector(&self, id: u32) -> &[f32] {
        let i = id as usize * self.dim;
        &self.vectors[i..i + self.dim]
    }

    fn code(&self, id: u32) -> &[i8] {
        let i = id as usize * self.dim;
        &self.codes[i..i + self.dim]
    }

    /// Approximate cosine distance from a prepared query to a node (int8 codes).
    fn dist(&self, q: &Query<'_>, id: u32) -> f32 {
        1.0 - q.scale * self.scales[id as usize] * dot_i8(&q.code, self.code(id)) as f32
    }

    /// Approximate cosine distance between two nodes.
    fn dist_nodes(&self, a: u32, b: u32) -> f32 {
        1.0 - self.scales[a as usize]
            * self.scales[b as usize]
            * dot_i8(self.code(a), self.code(b)) as f32
    }

    fn prepare<'a>(&self, q: &'a [f32]) -> Query<'a> {
        let (code, scale) = quantise(q);
        Query {
            exact: q,
            code,
            scale,
        }
    }

    fn random_level(&mut self) -> usize {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let u = ((r >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() * self.level_mult) as usize).min(16)
    }

    /// Best `ef` nodes of one layer reachable from `eps`, nearest first.
    fn search_layer(
        &self,
        q: &Query<'_>,
        eps: &[Scored],
        ef: usize,
        level: usize,
        visited: &mut [u64],
    ) -> Vec<Scored> {
        let mut cand: BinaryHeap<Reverse<Scored>> = BinaryHeap::new();
        let mut best: BinaryHeap<Scored> = BinaryHeap::new();
        for e in eps {
            visited[e.id as usize / 64] |= 1 << (e.id % 64);
            cand.push(Reverse(*e));
            best.push(*e);
        }
        while best.len() > ef {
            best.pop();
        }
        while let Some(Reverse(c)) = cand.pop() {
            if best.len() >= ef && c.dist > best.peek().map_or(f32::INFINITY, |b| b.dist) {
                break;
            }
            for &n in &self.links[c.id as usize][level] {
                let (w, bit) = (n as usize / 64, 1u64 << (n % 64));
                if visited[w] & bit != 0 {
                    continue;
                }
                visited[w] |= bit;
                let d = self.dist(q, n);
                if best.len() < ef || d < best.peek().map_or(f32::INFINITY, |b| b.dist) {
                    let s = Scored { dist: d, id: n };
                    cand.push(Reverse(s));
                    best.push(s);
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        best.into_sorted_vec()
    }

    /// The neighbour-selection heuristic: keep a candidate only if it is nearer to the
    /// base than to every neighbour already kept (spreads links across directions).
    fn select(&self, cands: &[Scored], m: usize) -> Vec<u32> {
        let mut kept: Vec<Scored> = Vec::with_capacity(m);
        for c in cands {
            if kept.len() >= m {
                break;
            }
            if kept.iter().all(|k| self.dist_nodes(c.id, k.id) > c.dist) {
                kept.push(*c);
            }
        }
        // Fill up with the nearest pruned ones, so sparse regions stay connected.
        if kept.len() < m {
            for c in cands {
                if kept.len() >= m {
                    break;
                }
                if !kept.iter().any(|k| k.id == c.id) {
                    kept.push(*c);
                }
            }
        }
        kept.iter().map(|k| k.id).collect()
    }

    /// Adds a (normalised) vector; returns its id.
    pub(crate) fn insert(&mut self, v: &[f32]) -> u32 {
        debug_assert_eq!(v.len(), self.dim);
        let id = self.links.len() as u32;
        let level = self.random_level();
        self.vectors.extend_from_slice(v);
        let (code, scale) = quantise(v);
        self.codes.extend_from_slice(&code);
        self.scales.push(scale);
        let q = self.prepare(v);
        self.links.push(vec![Vec::new(); level + 1]);
        let Some(entry) = self.entry else {
            self.entry = Some(id);
            self.max_level = level;
            return id;
        };
        let mut visited = vec![0u64; self.links.len().div_ceil(64)];
        let mut eps = vec![Scored {
            dist: self.dist(&q, entry),
            id: entry,
        }];
        for l in (level + 1..=self.max_level).rev() {
            eps = self.search_layer(&q, &eps, 1, l, &mut visited);
            visited.iter_mut().for_each(|w| *w = 0);
        }
        for l in (0..=level.min(self.max_level)).rev() {
            let found = self.search_layer(&q, &eps, self.ef_construction, l, &mut visited);
            visited.iter_mut().for_each(|w| *w = 0);
            let cap = if l == 0 { self.m0 } else { self.m };
            let neighbours = self.select(&found, self.m);
            self.links[id as usize][l] = neighbours.clone();
            for n in neighbours {
                self.links[n as usize][l].push(id);
                if self.links[n as usize][l].len() > cap {
                    let mut scored: Vec<Scored> = self.links[n as usize][l]
                        .iter()
                        .map(|&x| Scored {
                            dist: self.dist_nodes(n, x),
                            id: x,
                        })
                        .collect();
                    scored.sort();
                    self.links[n as usize][l] = self.select(&scored, cap);
                }
            }
            eps = found;
        }
        if level > self.max_level {
            self.max_level = level;
            self.entry = Some(id);
        }
        id
    }

    /// Up to `k` nodes most similar to `q` for which `keep` holds, most similar first,
    /// with their exact cosine similarity; `ef` (≥ k) trades speed for recall. The walk
    /// uses int8 codes; the `ef` candidates it ends with are re-scored exactly.
    pub(crate) fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        keep: impl Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        let q = self.prepare(q);
        let mut visited = vec![0u64; self.links.len().div_ceil(64)];
        let mut eps = vec![Scored {
            dist: self.dist(&q, entry),
            id: entry,
        }];
        for l in (1..=self.max_level).rev() {
            eps = self.search_layer(&q, &eps, 1, l, &mut visited);
            visited.iter_mut().for_each(|w| *w = 0);
        }
        let mut found: Vec<(u32, f32)> = self
            .search_layer(&q, &eps, ef.max(k), 0, &mut visited)
            .into_iter()
            .filter(|s| keep(s.id))
            .map(|s| (s.id, dot(q.exact, self.vector(s.id))))
            .collect();
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        found.truncate(k);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                    })
                    .collect();
                let n = dot(&v, &v).sqrt();
                v.iter_mut().for_each(|x| *x /= n);
                v
            })
            .collect()
    }

    #[test]
    fn finds_the_exact_nearest_neighbour_almost_always() {
        let data = unit_vectors(3000, 32, 7);
        let mut h = Hnsw::new(32);
        for v in &data {
            h.insert(v);
        }
        let queries = unit_vectors(200, 32, 99);
        let mut found = 0;
        for q in &queries {
            let exact = (0..data.len())
                .max_by(|&a, &b| dot(q, &data[a]).total_cmp(&dot(q, &data[b])))
                .unwrap() as u32;
            if h.search(q, 1, 64, |_| true).first().map(|r| r.0) == Some(exact) {
                found += 1;
            }
        }
        assert!(found >= 190, "recall@1 {found}/200");
        // A stored vector finds itself with similarity 1.
        let (id, sim) = h.search(&data[123], 1, 64, |_| true)[0];
        assert_eq!(id, 123);
        assert!((sim - 1.0).abs() < 1e-5);
        // The filter hides nodes.
        assert_ne!(h.search(&data[123], 1, 64, |i| i != 123)[0].0, 123);
    }
}
