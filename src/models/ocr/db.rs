//! Text boxes from the detector's probability map: the DB (Differentiable Binarization)
//! post-process of PaddleOCR and RapidOCR. The map is thresholded and dilated (2x2); each
//! region's border gives a minimum-area rectangle, kept when it is wide enough and the mean
//! probability inside passes `box_thresh`; the rectangle is grown ("unclip") by
//! area x ratio / perimeter with Clipper's round joins, and the grown polygon's minimum-area
//! rectangle, scaled to the image, is the box. Regions are borders of 8-connected regions and
//! of their holes, as OpenCV's `findContours(RETR_LIST)` finds them.

/// A point in map or image coordinates.
pub(crate) type Point = [f64; 2];

/// The post-process's settings (RapidOCR's `DBPostProcess`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DbSettings {
    pub thresh: f32,
    pub box_thresh: f32,
    pub max_candidates: usize,
    pub unclip_ratio: f64,
    pub use_dilation: bool,
}

/// What the post-process found.
pub(crate) struct DbBoxes {
    /// Boxes in image coordinates: top-left, top-right, bottom-right, bottom-left (integers).
    pub boxes: Vec<[[f32; 2]; 4]>,
    /// More regions than `max_candidates` were found; the rest were not looked at.
    pub capped: bool,
}

const MIN_SIZE: f64 = 3.0;

/// Boxes from a `height` x `width` probability map, in the coordinates of a `dest_w` x
/// `dest_h` image.
pub(crate) fn boxes_from_map(
    pred: &[f32],
    width: usize,
    height: usize,
    dest_w: usize,
    dest_h: usize,
    s: &DbSettings,
) -> DbBoxes {
    let mut mask: Vec<u8> = pred.iter().map(|&p| u8::from(p > s.thresh)).collect();
    if s.use_dilation {
        // cv2.dilate with a 2x2 kernel, anchor (1, 1): each pixel takes the max of itself and
        // its neighbours up and to the left.
        let src = mask.clone();
        for y in 0..height {
            for x in 0..width {
                let mut v = src[y * width + x];
                if x > 0 {
                    v |= src[y * width + x - 1];
                }
                if y > 0 {
                    v |= src[(y - 1) * width + x];
                    if x > 0 {
                        v |= src[(y - 1) * width + x - 1];
                    }
                }
                mask[y * width + x] = v;
            }
        }
    }
    let (contours, capped) = contours(&mask, width, height, s.max_candidates);
    let mut boxes = Vec::new();
    for contour in contours {
        let Some((points, side)) = mini_box(&contour) else { continue };
        if side < MIN_SIZE {
            continue;
        }
        let score = box_score_fast(pred, width, height, &points);
        if (s.box_thresh as f64) > score {
            continue;
        }
        let grown = unclip(&points, s.unclip_ratio);
        let Some((grown_box, side)) = mini_box(&grown) else { continue };
        if side < MIN_SIZE + 2.0 {
            continue;
        }
        let mut b = [[0f32; 2]; 4];
        for (out, p) in b.iter_mut().zip(grown_box) {
            // numpy: float32 / int * int, rounded half to even, clipped.
            let x = (p[0] as f32 / width as f32 * dest_w as f32).round_ties_even();
            let y = (p[1] as f32 / height as f32 * dest_h as f32).round_ties_even();
            *out = [x.clamp(0.0, dest_w as f32), y.clamp(0.0, dest_h as f32)];
        }
        // RapidOCR's filter_det_res: clockwise order, clipped into the image, tiny ones dropped.
        let mut b = order_clockwise(b);
        for p in &mut b {
            p[0] = p[0].clamp(0.0, dest_w as f32 - 1.0).trunc();
            p[1] = p[1].clamp(0.0, dest_h as f32 - 1.0).trunc();
        }
        let norm = |a: [f32; 2], c: [f32; 2]| ((a[0] - c[0]).powi(2) + (a[1] - c[1]).powi(2)).sqrt() as i64;
        if norm(b[0], b[1]) <= 3 || norm(b[0], b[3]) <= 3 {
            continue;
        }
        boxes.push(b);
    }
    DbBoxes { boxes, capped }
}

/// Borders of the 8-connected regions of 1s and of their 4-connected holes, at most `cap` of
/// them (in raster order of their first pixel), as point sets: all a minimum-area rectangle
/// needs. The second value says whether regions were left out.
fn contours(mask: &[u8], width: usize, height: usize, cap: usize) -> (Vec<Vec<Point>>, bool) {
    let mut label = vec![0u32; width * height];
    let mut out = Vec::new();
    let mut capped = false;
    let mut stack = Vec::new();
    let at = |x: usize, y: usize| mask[y * width + x] != 0;
    let mut next = 1u32;
    // Background reachable from the image's edge (4-connected) is outside; any other
    // background region is a hole.
    let mut outside = vec![false; width * height];
    for y in 0..height {
        for x in 0..width {
            if (x == 0 || y == 0 || x + 1 == width || y + 1 == height) && !at(x, y) && !outside[y * width + x] {
                outside[y * width + x] = true;
                stack.push((x, y));
                while let Some((cx, cy)) = stack.pop() {
                    for (nx, ny) in neighbours4(cx, cy, width, height) {
                        let i = ny * width + nx;
                        if !at(nx, ny) && !outside[i] {
                            outside[i] = true;
                            stack.push((nx, ny));
                        }
                    }
                }
            }
        }
    }
    let mut hole_seen = vec![false; width * height];
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            if at(x, y) && label[i] == 0 {
                if out.len() >= cap {
                    capped = true;
                    continue;
                }
                // A region: its border pixels are those with a 4-neighbour outside it.
                let mut border = Vec::new();
                label[i] = next;
                stack.push((x, y));
                while let Some((cx, cy)) = stack.pop() {
                    let mut is_border = false;
                    for (nx, ny) in neighbours4(cx, cy, width, height) {
                        is_border |= !at(nx, ny);
                    }
                    is_border |= cx == 0 || cy == 0 || cx + 1 == width || cy + 1 == height;
                    if is_border {
                        border.push([cx as f64, cy as f64]);
                    }
                    for dy in -1i64..=1 {
                        for dx in -1i64..=1 {
                            let (nx, ny) = (cx as i64 + dx, cy as i64 + dy);
                            if nx < 0 || ny < 0 || nx >= width as i64 || ny >= height as i64 {
                                continue;
                            }
                            let (nx, ny) = (nx as usize, ny as usize);
                            let j = ny * width + nx;
                            if at(nx, ny) && label[j] == 0 {
                                label[j] = next;
                                stack.push((nx, ny));
                            }
                        }
                    }
                }
                next += 1;
                out.push(border);
            } else if !at(x, y) && !outside[i] && !hole_seen[i] {
                if out.len() >= cap {
                    capped = true;
                    continue;
                }
                // A hole: its border is the 1s 4-adjacent to it.
                let mut border = Vec::new();
                hole_seen[i] = true;
                stack.push((x, y));
                let mut seen_border = std::collections::HashSet::new();
                while let Some((cx, cy)) = stack.pop() {
                    for (nx, ny) in neighbours4(cx, cy, width, height) {
                        let j = ny * width + nx;
                        if at(nx, ny) {
                            if seen_border.insert(j) {
                                border.push([nx as f64, ny as f64]);
                            }
                        } else if !hole_seen[j] {
                            hole_seen[j] = true;
                            stack.push((nx, ny));
                        }
                    }
                }
                out.push(border);
            }
        }
    }
    (out, capped)
}

fn neighbours4(x: usize, y: usize, width: usize, height: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut n = [(usize::MAX, usize::MAX); 4];
    if x > 0 {
        n[0] = (x - 1, y);
    }
    if x + 1 < width {
        n[1] = (x + 1, y);
    }
    if y > 0 {
        n[2] = (x, y - 1);
    }
    if y + 1 < height {
        n[3] = (x, y + 1);
    }
    n.into_iter().filter(|p| p.0 != usize::MAX)
}

fn cross(o: Point, a: Point, b: Point) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Convex hull (Andrew's monotone chain), counter-clockwise, without collinear points.
fn convex_hull(points: &[Point]) -> Vec<Point> {
    let mut p: Vec<Point> = points.to_vec();
    p.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let mut hull: Vec<Point> = Vec::with_capacity(p.len() * 2);
    for &pt in p.iter().chain(p.iter().rev().skip(1)) {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], pt) <= 0.0 {
            hull.pop();
        }
        hull.push(pt);
    }
    hull.pop();
    hull
}

/// The minimum-area rectangle around `points` (OpenCV's `minAreaRect` + `boxPoints`): its four
/// corners (f32, as OpenCV returns them) and the length of its shorter side.
fn min_area_rect(points: &[Point]) -> Option<([Point; 4], f64)> {
    let hull = convex_hull(points);
    match hull.len() {
        0 => return None,
        1 => return Some(([hull[0]; 4], 0.0)),
        2 => {
            let len = ((hull[1][0] - hull[0][0]).powi(2) + (hull[1][1] - hull[0][1]).powi(2)).sqrt();
            return Some(([hull[0], hull[1], hull[1], hull[0]], 0.0f64.min(len)));
        }
        _ => {}
    }
    let mut best: Option<(f64, [Point; 4], f64)> = None;
    for i in 0..hull.len() {
        let a = hull[i];
        let b = hull[(i + 1) % hull.len()];
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        if len == 0.0 {
            continue;
        }
        let u = [(b[0] - a[0]) / len, (b[1] - a[1]) / len];
        let v = [-u[1], u[0]];
        let (mut umin, mut umax, mut vmin, mut vmax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &hull {
            let du = (p[0] - a[0]) * u[0] + (p[1] - a[1]) * u[1];
            let dv = (p[0] - a[0]) * v[0] + (p[1] - a[1]) * v[1];
            umin = umin.min(du);
            umax = umax.max(du);
            vmin = vmin.min(dv);
            vmax = vmax.max(dv);
        }
        let area = (umax - umin) * (vmax - vmin);
        if best.as_ref().is_none_or(|(best_area, _, _)| area < *best_area - 1e-9) {
            let corner = |du: f64, dv: f64| {
                let x = a[0] + u[0] * du + v[0] * dv;
                let y = a[1] + u[1] * du + v[1] * dv;
                [x as f32 as f64, y as f32 as f64]
            };
            let corners = [corner(umin, vmin), corner(umax, vmin), corner(umax, vmax), corner(umin, vmax)];
            best = Some((area, corners, (umax - umin).min(vmax - vmin)));
        }
    }
    best.map(|(_, corners, side)| (corners, side))
}

/// RapidOCR's `get_mini_boxes`: the minimum-area rectangle's corners ordered top-left,
/// top-right, bottom-right, bottom-left (by its sort on x, then y within each pair).
fn mini_box(points: &[Point]) -> Option<([Point; 4], f64)> {
    let (corners, side) = min_area_rect(points)?;
    let mut p = corners.to_vec();
    p.sort_by(|a, b| a[0].total_cmp(&b[0])); // Python's sort is stable, on x only.
    let (i1, i4) = if p[1][1] > p[0][1] { (0, 1) } else { (1, 0) };
    let (i2, i3) = if p[3][1] > p[2][1] { (2, 3) } else { (3, 2) };
    Some(([p[i1], p[i2], p[i3], p[i4]], side))
}

/// The mean of `pred` over the box's filled polygon within its bounding rectangle
/// (`box_score_fast`).
fn box_score_fast(pred: &[f32], width: usize, height: usize, b: &[Point; 4]) -> f64 {
    let clampi = |v: f64, hi: usize| (v as i64).clamp(0, hi as i64 - 1);
    let xmin = clampi(b.iter().map(|p| p[0]).fold(f64::MAX, f64::min).floor(), width);
    let xmax = clampi(b.iter().map(|p| p[0]).fold(f64::MIN, f64::max).ceil(), width);
    let ymin = clampi(b.iter().map(|p| p[1]).fold(f64::MAX, f64::min).floor(), height);
    let ymax = clampi(b.iter().map(|p| p[1]).fold(f64::MIN, f64::max).ceil(), height);
    // The polygon in integer coordinates relative to the rectangle (astype(int32) truncates).
    let poly: Vec<[f64; 2]> =
        b.iter().map(|p| [((p[0] - xmin as f64) as i64) as f64, ((p[1] - ymin as f64) as i64) as f64]).collect();
    let (mut sum, mut count) = (0f64, 0usize);
    for ry in 0..=(ymax - ymin) {
        let yc = ry as f64;
        // The span of the convex polygon on this row, boundary included.
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for i in 0..4 {
            let (p, q) = (poly[i], poly[(i + 1) % 4]);
            if (p[1] <= yc && yc <= q[1]) || (q[1] <= yc && yc <= p[1]) {
                if p[1] == q[1] {
                    lo = lo.min(p[0].min(q[0]));
                    hi = hi.max(p[0].max(q[0]));
                } else {
                    let x = p[0] + (yc - p[1]) * (q[0] - p[0]) / (q[1] - p[1]);
                    lo = lo.min(x);
                    hi = hi.max(x);
                }
            }
        }
        if lo > hi {
            continue;
        }
        let (from, to) = (lo.round().max(0.0) as i64, hi.round().min((xmax - xmin) as f64) as i64);
        for rx in from..=to {
            let (x, y) = ((xmin + rx) as usize, (ymin + ry) as usize);
            sum += pred[y * width + x] as f64;
            count += 1;
        }
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// Grows the rectangle by area x ratio / perimeter with Clipper's round joins (pyclipper's
/// `PyclipperOffset`, arc tolerance 0.25; coordinates truncated to integers on the way in and
/// rounded on the way out, as pyclipper does).
fn unclip(b: &[Point; 4], ratio: f64) -> Vec<Point> {
    let area = {
        let mut s = 0.0;
        for i in 0..4 {
            let (p, q) = (b[i], b[(i + 1) % 4]);
            s += p[0] * q[1] - q[0] * p[1];
        }
        (s / 2.0).abs()
    };
    let perimeter: f64 =
        (0..4).map(|i| ((b[(i + 1) % 4][0] - b[i][0]).powi(2) + (b[(i + 1) % 4][1] - b[i][1]).powi(2)).sqrt()).sum();
    if perimeter == 0.0 {
        return b.to_vec();
    }
    let delta = area * ratio / perimeter;
    let mut path: Vec<Point> = b.iter().map(|p| [p[0].trunc(), p[1].trunc()]).collect();
    path.dedup();
    while path.len() > 1 && path.first() == path.last() {
        path.pop();
    }
    if path.len() < 3 {
        return path;
    }
    // Clipper turns the path to positive orientation before offsetting outwards.
    let signed: f64 = (0..path.len())
        .map(|i| {
            let (p, q) = (path[i], path[(i + 1) % path.len()]);
            p[0] * q[1] - q[0] * p[1]
        })
        .sum();
    if signed < 0.0 {
        path.reverse();
    }
    let n = path.len();
    let normals: Vec<Point> = (0..n)
        .map(|j| {
            let (p, q) = (path[j], path[(j + 1) % n]);
            let (dx, dy) = (q[0] - p[0], q[1] - p[1]);
            let f = 1.0 / (dx * dx + dy * dy).sqrt();
            [dy * f, -dx * f]
        })
        .collect();
    let tolerance = 0.25f64.min(delta.abs() * 0.25);
    let mut steps = std::f64::consts::PI / (1.0 - tolerance / delta.abs()).acos();
    if steps > delta.abs() * std::f64::consts::PI {
        steps = delta.abs() * std::f64::consts::PI;
    }
    let (sin, cos) = (2.0 * std::f64::consts::PI / steps).sin_cos();
    let steps_per_rad = steps / (2.0 * std::f64::consts::PI);
    let round = |v: f64| v.round(); // Clipper's Round: half away from zero.
    let mut out = Vec::new();
    let mut k = n - 1;
    for j in 0..n {
        let (nk, nj, p) = (normals[k], normals[j], path[j]);
        let sin_a = (nk[0] * nj[1] - nj[0] * nk[1]).clamp(-1.0, 1.0);
        if sin_a * delta < 0.0 {
            out.push([round(p[0] + nk[0] * delta), round(p[1] + nk[1] * delta)]);
            out.push(p);
            out.push([round(p[0] + nj[0] * delta), round(p[1] + nj[1] * delta)]);
        } else {
            let a = sin_a.atan2(nk[0] * nj[0] + nk[1] * nj[1]);
            let count = ((steps_per_rad * a.abs()).round() as i64).max(1);
            let (mut x, mut y) = (nk[0], nk[1]);
            for _ in 0..count {
                out.push([round(p[0] + x * delta), round(p[1] + y * delta)]);
                let x2 = x;
                x = x * cos - sin * y;
                y = x2 * sin + y * cos;
            }
            out.push([round(p[0] + nj[0] * delta), round(p[1] + nj[1] * delta)]);
        }
        k = j;
    }
    out
}

/// imutils' `order_points_clockwise`: the two leftmost points (stable sort on x) ordered by y
/// give top-left and bottom-left, the two rightmost top-right and bottom-right.
fn order_clockwise(b: [[f32; 2]; 4]) -> [[f32; 2]; 4] {
    let mut p = b.to_vec();
    p.sort_by(|a, c| a[0].total_cmp(&c[0]));
    let mut left = [p[0], p[1]];
    let mut right = [p[2], p[3]];
    left.sort_by(|a, c| a[1].total_cmp(&c[1]));
    right.sort_by(|a, c| a[1].total_cmp(&c[1]));
    [left[0], right[0], right[1], left[1]]
}

/// RapidOCR's reading order: boxes sorted by the top-left corner's y (stable), rows split where
/// consecutive y values differ by 10 px or more, then sorted by x within each row.
pub(crate) fn reading_order(boxes: &mut Vec<[[f32; 2]; 4]>) {
    boxes.sort_by(|a, b| a[0][1].total_cmp(&b[0][1]));
    let mut line = 0u32;
    let mut keyed: Vec<(u32, f32, [[f32; 2]; 4])> = Vec::with_capacity(boxes.len());
    for (i, b) in boxes.iter().enumerate() {
        if i > 0 && b[0][1] - boxes[i - 1][0][1] >= 10.0 {
            line += 1;
        }
        keyed.push((line, b[0][0], *b));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    *boxes = keyed.into_iter().map(|k| k.2).collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unclip_matches_pyclipper() {
        // pyclipper 1.4: the rectangle (0.7, 0.7)-(10.7, 5.7) offset by 2 spans (-2, -2)-(12, 7).
        let b = [[0.7, 0.7], [10.7, 0.7], [10.7, 5.7], [0.7, 5.7]];
        // Area 50, perimeter 30: a ratio of 1.2 grows it by 2.
        let grown = unclip(&b, 1.2);
        let xs: Vec<f64> = grown.iter().map(|p| p[0]).collect();
        let ys: Vec<f64> = grown.iter().map(|p| p[1]).collect();
        assert!(!xs.is_empty() && !ys.is_empty());
        let (min_x, max_x) = (xs.iter().cloned().fold(f64::MAX, f64::min), xs.iter().cloned().fold(f64::MIN, f64::max));
        let (min_y, max_y) = (ys.iter().cloned().fold(f64::MAX, f64::min), ys.iter().cloned().fold(f64::MIN, f64::max));
        assert_eq!((min_x, max_x, min_y, max_y), (-2.0, 12.0, -2.0, 7.0));
    }

    #[test]
    fn a_filled_rectangle_gives_one_grown_box() {
        let (w, h) = (60, 30);
        let mut pred = vec![0f32; w * h];
        for y in 10..20 {
            for x in 10..50 {
                pred[y * w + x] = 0.9;
            }
        }
        let s =
            DbSettings { thresh: 0.3, box_thresh: 0.5, max_candidates: 1000, unclip_ratio: 1.6, use_dilation: true };
        let found = boxes_from_map(&pred, w, h, w, h, &s);
        assert_eq!(found.boxes.len(), 1);
        let b = found.boxes[0];
        assert!(b[0][0] < 10.0 && b[2][0] > 49.0 && b[0][1] < 10.0 && b[2][1] > 19.0, "{b:?}");
        assert!(!found.capped);
    }

    #[test]
    fn regions_past_the_cap_are_reported() {
        let (w, h) = (40, 4);
        let mut pred = vec![0f32; w * h];
        for x in (0..w).step_by(4) {
            pred[w + x] = 0.9;
        }
        let s = DbSettings { thresh: 0.3, box_thresh: 0.5, max_candidates: 3, unclip_ratio: 1.6, use_dilation: false };
        assert!(boxes_from_map(&pred, w, h, w, h, &s).capped);
    }
}
