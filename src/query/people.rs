//! Grouping faces into people, as pure functions over embeddings (the library stores what
//! they decide).
//!
//! Distances are Euclidean between face embeddings, on the scale of dlib's 128-d face
//! vectors, where two faces of one person are usually under 0.6 apart. Grouping is
//! incremental, as Immich's:
//!
//! 1. A face without a person joins the person of its nearest placed face, when that face is
//!    within `max_distance` and the user has not said the face is not that person (the
//!    nearest allowed one is taken).
//! 2. Faces still without a person form new persons by a DBSCAN-like core rule: a face with
//!    at least `min_faces` faces (itself included) within `max_distance` is a core face; core
//!    faces within `max_distance` of each other are one person, and a face near a core face
//!    joins that core's person. The rest wait for more faces (or the next reclustering).
//!
//! The defaults ([`DEFAULT_MAX_DISTANCE`], [`DEFAULT_MIN_FACES`]) were chosen by the
//! pairwise precision and recall measured on real faces (`tests/face_clusters.rs`) and on
//! synthetic clusters (this module's tests).

use std::collections::{HashMap, HashSet};

use crate::store::{FaceId, PersonId};

/// Faces further apart than this are not one person (Euclidean, dlib's scale). On real faces
/// (`tests/face_clusters.rs`: four people, 51 faces) every value from 0.4 to 0.55 groups
/// perfectly and 0.6 puts two people in one (their closest faces are 0.59 apart). On
/// synthetic clusters ([`synthetic_faces`], the table in `docs/src/people-library.md`): 0.5
/// has the best balance (pairwise precision 0.93, recall 0.78); 0.45 makes no false merge but
/// finds 0.69 of the pairs; 0.6, dlib's threshold for telling whether two faces are one person,
/// chains look-alike persons together through their nearest faces (precision 0.72).
pub const DEFAULT_MAX_DISTANCE: f32 = 0.5;

/// [`DEFAULT_MAX_DISTANCE`] for InsightFace's ArcFace embeddings, which the face model stores
/// L2-normalised, so that Euclidean distance d and cosine similarity c relate as
/// d = sqrt(2 - 2c): 1.0 is c = 0.5, Immich's default for the same model (its `maxDistance` 0.5
/// in cosine distance, 1 - c). Not measured here: the tests run random-weight ArcFace models,
/// and the real buffalo_l weights are not redistributable.
pub const ARCFACE_MAX_DISTANCE: f32 = 1.0;

/// Faces that must agree (lie within the distance of one another, the face itself counted)
/// before they form a new person: Immich's default. On the synthetic set it changes nothing
/// from 2 to 5 (persons there have 12 faces, strangers are far from everyone); it keeps two
/// faces that happen to be close from making a person of their own.
pub const DEFAULT_MIN_FACES: usize = 3;

/// The two parameters of grouping.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterOptions {
    /// Faces further apart than this are not one person.
    pub max_distance: f32,
    /// Faces that must agree before a new person forms.
    pub min_faces: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { max_distance: DEFAULT_MAX_DISTANCE, min_faces: DEFAULT_MIN_FACES }
    }
}

impl ClusterOptions {
    /// The defaults for ArcFace's normalised 512-d embeddings (InsightFace's models).
    pub fn arcface() -> Self {
        ClusterOptions { max_distance: ARCFACE_MAX_DISTANCE, min_faces: DEFAULT_MIN_FACES }
    }
}

/// A face as grouping sees it.
#[derive(Debug, Clone, Copy)]
pub struct FacePoint<'a> {
    /// Its id.
    pub id: FaceId,
    /// Its embedding.
    pub embedding: &'a [f32],
    /// Its person, when it has one (such faces stay where they are).
    pub person: Option<PersonId>,
}

/// Where grouping puts a face that had no person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// An existing person.
    Person(PersonId),
    /// The `n`-th new person (from 0).
    NewPerson(usize),
}

/// Euclidean distance; infinite between embeddings of different widths (other models).
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

/// Places the faces of `faces` that have no person (see the module documentation); faces
/// that stay without one are not in the result. `forbidden` holds the user's corrections
/// (face F is not person P).
pub fn place_faces(
    faces: &[FacePoint],
    forbidden: &HashSet<(FaceId, PersonId)>,
    options: &ClusterOptions,
) -> Vec<(FaceId, Placement)> {
    let placed: Vec<&FacePoint> = faces.iter().filter(|f| f.person.is_some()).collect();
    let mut out = Vec::new();
    let mut waiting = Vec::new();
    for face in faces.iter().filter(|f| f.person.is_none()) {
        let mut near: Vec<(f32, PersonId)> = placed
            .iter()
            .filter_map(|p| {
                let d = distance(face.embedding, p.embedding);
                (d <= options.max_distance).then_some((d, p.person?))
            })
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        match near.into_iter().find(|(_, p)| !forbidden.contains(&(face.id, *p))) {
            Some((_, person)) => out.push((face.id, Placement::Person(person))),
            None => waiting.push(*face),
        }
    }
    for (face, group) in core_groups(&waiting, options) {
        out.push((face, Placement::NewPerson(group)));
    }
    out
}

/// DBSCAN over `faces`: `(face, group)` for every face in a group, groups numbered from 0 in
/// the order of their first core face.
pub fn core_groups(faces: &[FacePoint], options: &ClusterOptions) -> Vec<(FaceId, usize)> {
    let groups = core_groups_by(faces.len(), |i, j| distance(faces[i].embedding, faces[j].embedding), options);
    faces.iter().zip(groups).filter_map(|(f, g)| Some((f.id, g?))).collect()
}

/// [`core_groups`] over `n` items whose distances `distance(i, j)` gives: each item's group.
pub fn core_groups_by(
    n: usize,
    distance: impl Fn(usize, usize) -> f32,
    options: &ClusterOptions,
) -> Vec<Option<usize>> {
    let mut neighbours: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in i + 1..n {
            let d = distance(i, j);
            if d <= options.max_distance {
                neighbours[i].push((j, d));
                neighbours[j].push((i, d));
            }
        }
    }
    let core: Vec<bool> = neighbours.iter().map(|ns| ns.len() + 1 >= options.min_faces.max(1)).collect();
    let mut group: Vec<Option<usize>> = vec![None; n];
    let mut groups = 0;
    for start in 0..n {
        if !core[start] || group[start].is_some() {
            continue;
        }
        let g = groups;
        groups += 1;
        group[start] = Some(g);
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for &(j, _) in &neighbours[i] {
                if core[j] && group[j].is_none() {
                    group[j] = Some(g);
                    stack.push(j);
                }
            }
        }
    }
    // Border items join the group of their nearest core item.
    let border: Vec<Option<usize>> = (0..n)
        .map(|i| {
            if group[i].is_some() {
                return group[i];
            }
            neighbours[i]
                .iter()
                .filter(|(j, _)| core[*j])
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .and_then(|(j, _)| group[*j])
        })
        .collect();
    border
}

/// Pairwise precision and recall of a grouping against the truth: of the pairs of faces put
/// in one group, the share that are one identity; of the pairs that are one identity, the
/// share put in one group. Faces without a group are alone. Precision is 1 with no pair
/// grouped, recall 1 with no pair to find.
pub fn pairwise_precision_recall(truth: &[usize], grouped: &[Option<usize>]) -> (f64, f64) {
    let (mut both, mut grouped_pairs, mut true_pairs) = (0u64, 0u64, 0u64);
    for i in 0..truth.len() {
        for j in i + 1..truth.len() {
            let same = truth[i] == truth[j];
            let together = grouped[i].is_some() && grouped[i] == grouped[j];
            true_pairs += u64::from(same);
            grouped_pairs += u64::from(together);
            both += u64::from(same && together);
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    (ratio(both, grouped_pairs), ratio(both, true_pairs))
}

/// Intersection over union of two `[x, y, w, h]` boxes.
pub fn box_overlap(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// The old face each new face is, by box overlap: for each of `new`, the index of the old box
/// it overlaps most (at least `min_overlap`), each old box used once, best overlaps first.
pub fn match_boxes(old: &[[f32; 4]], new: &[[f32; 4]], min_overlap: f32) -> Vec<Option<usize>> {
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (i, n) in new.iter().enumerate() {
        for (j, o) in old.iter().enumerate() {
            let overlap = box_overlap(o, n);
            if overlap >= min_overlap {
                pairs.push((overlap, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut matched = vec![None; new.len()];
    let mut used = HashSet::new();
    for (_, i, j) in pairs {
        if matched[i].is_none() && used.insert(j) {
            matched[i] = Some(j);
        }
    }
    matched
}

/// The overlap two boxes need to be one face across detections (a new model's box of the
/// same face moves by a few pixels).
pub const MIN_BOX_OVERLAP: f32 = 0.5;

/// Groups of faces by person: for each person, its faces (ids) in `faces` order.
pub fn faces_by_person(faces: &[FacePoint]) -> HashMap<PersonId, Vec<FaceId>> {
    let mut out: HashMap<PersonId, Vec<FaceId>> = HashMap::new();
    for f in faces {
        if let Some(p) = f.person {
            out.entry(p).or_default().push(f.id);
        }
    }
    out
}

/// Synthetic identities for measuring grouping: `people` identities with `per_person` faces
/// each, then as many strangers seen once (faces in the background), as 128-d vectors at
/// dlib's scale: identities' centres about 0.9 apart, one in five a look-alike of the one
/// before it (centres about 0.7 apart, as siblings); faces 0.15 to 0.35 from their centre,
/// one in six a hard one (a profile, blur, dim light) about 0.5 away. Returns the embeddings
/// and each one's identity. Deterministic in `seed`.
pub fn synthetic_faces(people: usize, per_person: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
    const DIM: usize = 128;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        ((state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    };
    let mut gaussian = move || {
        let (u, v) = (uniform(), uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    };
    // Per coordinate: 0.056 × √(2 × 128) ≈ 0.9 between centres; 0.044 × √128 ≈ 0.5 from a
    // centre to its look-alike's... × √2 between two such: about 0.7.
    let mut centres: Vec<Vec<f32>> = Vec::with_capacity(people);
    for k in 0..people {
        let centre: Vec<f32> = if k > 0 && k % 5 == 0 {
            centres[k - 1].iter().map(|c| c + 0.044 * gaussian()).collect()
        } else {
            (0..DIM).map(|_| 0.056 * gaussian()).collect()
        };
        centres.push(centre);
    }
    let (mut faces, mut truth) = (Vec::new(), Vec::new());
    for (k, centre) in centres.iter().enumerate() {
        for i in 0..per_person {
            let spread = if i % 6 == 5 { 0.045 } else { 0.013 + 0.017 * ((i * 7 + k) % 5) as f32 / 4.0 };
            faces.push(centre.iter().map(|c| c + spread * gaussian()).collect());
            truth.push(k);
        }
    }
    for s in 0..people {
        faces.push((0..DIM).map(|_| 0.056 * gaussian()).collect());
        truth.push(people + s);
    }
    (faces, truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_all(embeddings: &[Vec<f32>], options: &ClusterOptions) -> Vec<Option<usize>> {
        let points: Vec<FacePoint> = embeddings
            .iter()
            .enumerate()
            .map(|(i, e)| FacePoint { id: i as FaceId, embedding: e, person: None })
            .collect();
        let placed = place_faces(&points, &HashSet::new(), options);
        let mut grouped = vec![None; embeddings.len()];
        for (face, placement) in placed {
            if let Placement::NewPerson(g) = placement {
                grouped[face as usize] = Some(g);
            }
        }
        grouped
    }

    /// The figures behind the defaults (printed with `--nocapture`); at the defaults, pairwise
    /// precision must stay at 0.9 or more with recall at 0.75 or more.
    #[test]
    fn defaults_measured_on_synthetic_clusters() {
        let mut table = String::from("max_distance min_faces precision recall\n");
        let mut at_defaults = None;
        let sets: Vec<(Vec<f32>, usize, Vec<usize>)> = (1..=3)
            .map(|seed| {
                let (faces, truth) = synthetic_faces(40, 12, seed);
                let n = faces.len();
                let mut d = vec![0f32; n * n];
                for i in 0..n {
                    for j in 0..n {
                        d[i * n + j] = distance(&faces[i], &faces[j]);
                    }
                }
                (d, n, truth)
            })
            .collect();
        for &max_distance in &[0.4f32, 0.45, 0.5, 0.55, 0.6] {
            for &min_faces in &[2usize, 3, 5] {
                let options = ClusterOptions { max_distance, min_faces };
                let (mut p, mut r) = (0.0, 0.0);
                for (d, n, truth) in &sets {
                    let grouped = core_groups_by(*n, |i, j| d[i * n + j], &options);
                    let (sp, sr) = pairwise_precision_recall(truth, &grouped);
                    p += sp / 3.0;
                    r += sr / 3.0;
                }
                table += &format!("{max_distance:.2} {min_faces} {p:.4} {r:.4}\n");
                if options == ClusterOptions::default() {
                    at_defaults = Some((p, r));
                }
            }
        }
        // The grouping through the public entry gives the same figures as the matrix.
        let (faces, truth) = synthetic_faces(12, 6, 9);
        let direct = group_all(&faces, &ClusterOptions::default());
        let n = faces.len();
        let by_matrix = core_groups_by(n, |i, j| distance(&faces[i], &faces[j]), &ClusterOptions::default());
        assert_eq!(direct, by_matrix);
        assert!(pairwise_precision_recall(&truth, &direct).0 >= 0.9);
        println!("{table}");
        let (p, r) = at_defaults.unwrap();
        assert!(p >= 0.9 && r >= 0.75, "defaults: precision {p:.3}, recall {r:.3}\n{table}");
    }

    #[test]
    fn corrections_keep_a_face_out_of_a_person() {
        let a = vec![0.0f32; 4];
        let b = vec![0.1f32, 0.0, 0.0, 0.0];
        let c = vec![0.05f32, 0.0, 0.0, 0.0];
        let points = [
            FacePoint { id: 1, embedding: &a, person: Some(10) },
            FacePoint { id: 2, embedding: &b, person: Some(20) },
            FacePoint { id: 3, embedding: &c, person: None },
        ];
        let options = ClusterOptions { max_distance: 0.5, min_faces: 3 };
        // Equally near 10 and 20: the nearest (10, by id on a tie) unless forbidden.
        assert_eq!(place_faces(&points, &HashSet::new(), &options), [(3, Placement::Person(10))]);
        let no10 = HashSet::from([(3, 10)]);
        assert_eq!(place_faces(&points, &no10, &options), [(3, Placement::Person(20))]);
        let neither = HashSet::from([(3, 10), (3, 20)]);
        assert!(place_faces(&points, &neither, &options).is_empty(), "one face alone forms no person");
    }

    #[test]
    fn boxes_match_by_overlap_each_old_once() {
        let old = [[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 20.0, 20.0]];
        // The second and the third both overlap the first old box; the second more.
        let new = [[101.0, 99.0, 20.0, 21.0], [1.0, 1.0, 10.0, 10.0], [3.0, 0.0, 10.0, 10.0], [500.0, 0.0, 5.0, 5.0]];
        assert_eq!(match_boxes(&old, &new, MIN_BOX_OVERLAP), [Some(1), Some(0), None, None]);
        assert_eq!(box_overlap(&old[0], &old[0]), 1.0);
    }

    #[test]
    fn precision_and_recall_of_known_groupings() {
        assert_eq!(pairwise_precision_recall(&[0, 0, 1, 1], &[Some(0), Some(0), Some(1), Some(1)]), (1.0, 1.0));
        let (p, r) = pairwise_precision_recall(&[0, 0, 1, 1], &[Some(0), Some(0), Some(0), Some(0)]);
        assert!((p - 2.0 / 6.0).abs() < 1e-9 && r == 1.0);
        assert_eq!(pairwise_precision_recall(&[0, 0, 1], &[None, None, None]), (1.0, 0.0));
    }
}
