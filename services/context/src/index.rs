//! A scope's embeddings, laid out for exact search.
//!
//! Every vector is normalised to length 1 when it is applied, so cosine similarity is a
//! dot product, and the vectors sit one after another in one flat `Vec<f32>`: a search
//! walks contiguous memory once, and the dot product is written as independent lanes of
//! 16 that the compiler turns into SIMD instructions. Exact search means recall 1.0:
//! nothing is approximated. At 100,000 vectors of 384 dimensions (154 MB) a search is a
//! scan of memory at close to the machine's bandwidth (`osp bench context` measures it).

use std::collections::HashMap;

use osp_protocol::context::queries::Match;
use osp_protocol::context::Embedding;

/// Lanes of the dot product: 16 f32 (four 128-bit or two 256-bit registers).
const LANES: usize = 16;

/// The embeddings of one scope.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VectorIndex {
    dimension: usize,
    /// `items.len() × dimension` floats, item `i` at `i × dimension`.
    vectors: Vec<f32>,
    items: Vec<Item>,
    slots: HashMap<String, usize>,
}

/// What an embedding carries besides its vector.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// Unique in the scope: an upsert of the same id replaces it.
    pub id: String,
    /// What was embedded.
    pub content: String,
    /// What a search's `filter` is matched against; `None` when none was given.
    pub metadata: Option<serde_json::Value>,
}

impl VectorIndex {
    /// How many embeddings it holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The dimension of its vectors (0 while empty).
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Adds or replaces an embedding. The aggregate has checked its dimension.
    pub fn upsert(&mut self, embedding: &Embedding) {
        if self.items.is_empty() {
            self.dimension = embedding.vector.len();
        }
        let vector = normalised(&embedding.vector);
        let item =
            Item { id: embedding.id.clone(), content: embedding.content.clone(), metadata: embedding.metadata.clone() };
        match self.slots.get(&embedding.id) {
            Some(&slot) => {
                self.vectors[slot * self.dimension..(slot + 1) * self.dimension].copy_from_slice(&vector);
                self.items[slot] = item;
            }
            None => {
                self.slots.insert(embedding.id.clone(), self.items.len());
                self.vectors.extend_from_slice(&vector);
                self.items.push(item);
            }
        }
    }

    /// Removes an embedding: the last one takes its place.
    pub fn remove(&mut self, id: &str) {
        let Some(slot) = self.slots.remove(id) else { return };
        let last = self.items.len() - 1;
        if slot != last {
            let (dimension, moved) = (self.dimension, self.items[last].id.clone());
            self.vectors.copy_within(last * dimension..(last + 1) * dimension, slot * dimension);
            self.slots.insert(moved, slot);
        }
        self.items.swap_remove(slot);
        self.vectors.truncate(last * self.dimension);
    }

    /// An embedding and its (normalised) vector.
    pub fn get(&self, id: &str) -> Option<(&Item, &[f32])> {
        let slot = *self.slots.get(id)?;
        Some((&self.items[slot], &self.vectors[slot * self.dimension..(slot + 1) * self.dimension]))
    }

    /// The `top_k` embeddings closest to `query` (any length; normalised here) among those
    /// `keep` accepts, best first (ties by id), and how many were compared.
    pub fn search(&self, query: &[f32], top_k: usize, keep: impl Fn(&Item) -> bool) -> (Vec<Match>, u64) {
        let query = normalised(query);
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(top_k + 1);
        let mut compared = 0u64;
        for (slot, vector) in self.vectors.chunks_exact(self.dimension.max(1)).enumerate() {
            if !keep(&self.items[slot]) {
                continue;
            }
            compared += 1;
            let score = dot(&query, vector);
            if best.len() == top_k && best.last().is_some_and(|(worst, _)| score <= *worst) {
                continue;
            }
            let at = best.partition_point(|(other, _)| *other >= score);
            best.insert(at, (score, slot));
            best.truncate(top_k);
        }
        let mut matches: Vec<Match> = best
            .into_iter()
            .map(|(score, slot)| {
                let item = &self.items[slot];
                Match { id: item.id.clone(), content: item.content.clone(), metadata: item.metadata.clone(), score }
            })
            .collect();
        matches.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        (matches, compared)
    }

    /// The items in slot order with their vectors, for the digest.
    pub fn slots(&self) -> impl Iterator<Item = (&Item, &[f32])> {
        self.items.iter().zip(self.vectors.chunks_exact(self.dimension.max(1)))
    }
}

/// `vector` scaled to length 1 (the aggregate refuses zero vectors).
pub fn normalised(vector: &[f32]) -> Vec<f32> {
    let norm = dot(vector, vector).sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    vector.iter().map(|x| x * scale).collect()
}

/// The dot product as [`LANES`] independent sums, which the compiler vectorises (a
/// single running sum would be one long dependency chain it may not reorder).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Whether `metadata` has every field of `filter` with its value (a field holding a list
/// matches any item of it).
pub fn matches_filter(
    metadata: Option<&serde_json::Value>,
    filter: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    filter.iter().all(|(field, wanted)| match metadata.and_then(|metadata| metadata.get(field)) {
        Some(serde_json::Value::Array(items)) if !wanted.is_array() => items.contains(wanted),
        Some(value) => value == wanted,
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn embedding(id: &str, vector: Vec<f32>, metadata: serde_json::Value) -> Embedding {
        Embedding { id: id.into(), content: id.to_uppercase(), metadata: Some(metadata), vector }
    }

    #[test]
    fn search_is_cosine_best_first() {
        let mut index = VectorIndex::default();
        index.upsert(&embedding("east", vec![10.0, 0.0], json!({"kind": "point"})));
        index.upsert(&embedding("north", vec![0.0, 2.0], json!({"kind": "point", "tags": ["up"]})));
        index.upsert(&embedding("north-east", vec![1.0, 1.0], json!({"kind": "diagonal"})));
        let (found, compared) = index.search(&[3.0, 0.1], 2, |_| true);
        assert_eq!(compared, 3);
        assert_eq!(found.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["east", "north-east"]);
        assert!((found[0].score - 0.99944).abs() < 1e-4, "{}", found[0].score);
        let filter = json!({"tags": "up"});
        let (found, compared) =
            index.search(&[3.0, 0.1], 5, |item| matches_filter(item.metadata.as_ref(), filter.as_object().unwrap()));
        assert_eq!((found.len(), compared, found[0].id.as_str()), (1, 1, "north"));
    }

    #[test]
    fn upsert_replaces_and_remove_keeps_the_rest_in_place() {
        let mut index = VectorIndex::default();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            index.upsert(&embedding(id, vec![i as f32 + 1.0, 1.0, 0.0], json!({})));
        }
        index.upsert(&embedding("b", vec![0.0, 0.0, 5.0], json!({"v": 2})));
        index.remove("a");
        index.remove("zzz");
        assert_eq!(index.len(), 3);
        let (item, vector) = index.get("b").unwrap();
        assert_eq!((item.metadata.clone(), vector.to_vec()), (Some(json!({"v": 2})), vec![0.0, 0.0, 1.0]));
        let (item, vector) = index.get("d").unwrap();
        assert_eq!(item.id, "d");
        assert!((dot(vector, vector) - 1.0).abs() < 1e-6);
        assert!(index.get("a").is_none());
        let (found, _) = index.search(&[0.0, 0.0, 1.0], 1, |_| true);
        assert_eq!(found[0].id, "b");
    }

    #[test]
    fn the_lanes_add_up_to_the_plain_sum() {
        let a: Vec<f32> = (0..389).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..389).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }
}
