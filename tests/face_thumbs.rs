//! Face thumbnails (`Library::face_thumbnail`, `GET /api/faces/{id}/thumb`): a square around
//! the face, 1.6 times its box, moved inside the photo at its edges, never enlarged; cached;
//! refused for a size out of range and for a face that is not there.

mod common;

use std::path::Path;

use clipdex::store::{FaceScan, ImageId, NewFace};
use clipdex::{Error, Library, LibraryConfig};
use common::picture;

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny-p32").to_string_lossy().into_owned()
}

fn face(bbox: [f32; 4]) -> NewFace {
    let [x, y, w, h] = bbox;
    NewFace {
        bbox,
        score: 0.9,
        landmarks: [[x, y], [x + w, y], [x + w / 2.0, y + h / 2.0], [x, y + h], [x + w, y + h]],
        embedding: vec![0.5; 128],
        person: None,
        pinned: false,
    }
}

/// Mean absolute difference of the thumbnail's pixels from the photo's at `(left, top)`.
fn difference(thumb: &image::RgbImage, photo: &image::RgbImage, left: u32, top: u32) -> f64 {
    let mut sum = 0.0;
    for (x, y, p) in thumb.enumerate_pixels() {
        let q = photo.get_pixel(left + x, top + y);
        sum += (0..3).map(|c| (p[c] as f64 - q[c] as f64).abs()).sum::<f64>();
    }
    sum / (thumb.width() * thumb.height() * 3) as f64
}

#[test]
fn a_face_thumbnail_is_a_square_around_the_face_kept_inside_the_photo() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    // 160 × 120 px, lossless: the crops can be compared with the photo's pixels.
    let photo = picture(3);
    photo.save(photos.join("p.png")).unwrap();
    let lib = Library::open(LibraryConfig::new(tmp.path().join("db"), model())).unwrap();
    lib.add_root(&photos).unwrap();
    lib.index(&|_, _| {}).unwrap();
    let root = std::fs::canonicalize(&photos).unwrap();
    let id: ImageId = lib.store().path_entry(&root.join("p.png")).unwrap().unwrap().id;
    let hash = lib.store().image(id).unwrap().unwrap().hash;
    // In the middle, at the top left corner, at the bottom right corner, larger than the photo.
    let boxes =
        [[50.0, 30.0, 40.0, 40.0], [0.0, 0.0, 20.0, 20.0], [150.0, 110.0, 10.0, 10.0], [0.0, 0.0, 150.0, 120.0]];
    lib.store_found_faces(id, &FaceScan { model: "test".into(), hash }, boxes.iter().map(|&b| face(b)).collect())
        .unwrap();
    let faces = lib.faces_in(id).unwrap();
    assert_eq!(faces.len(), 4);
    // (side, left, top) of each crop: 1.6 times the box's longer side around its centre,
    // moved inside the photo; at most the photo's shorter side.
    let expected = [(64, 38, 18), (32, 0, 0), (16, 144, 104), (120, 15, 0)];
    for (f, &(side, left, top)) in faces.iter().zip(&expected) {
        let jpeg = lib.face_thumbnail(f.id, 160).unwrap();
        let thumb = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!(thumb.dimensions(), (side, side), "face at {:?}", f.bbox);
        let off = difference(&thumb, &photo, left, top);
        assert!(off < 12.0, "face at {:?}: {off} from the photo's pixels at {left}, {top}", f.bbox);
        // Cached: the same bytes again.
        assert_eq!(lib.face_thumbnail(f.id, 160).unwrap(), jpeg);
    }
    // A smaller size scales the square down.
    let small = image::load_from_memory(&lib.face_thumbnail(faces[3].id, 48).unwrap()).unwrap();
    assert_eq!((small.width(), small.height()), (48, 48));
    assert!(matches!(lib.face_thumbnail(faces[0].id, 513), Err(Error::Invalid(_))));
    assert!(matches!(lib.face_thumbnail(faces[0].id, 8), Err(Error::Invalid(_))));
    let missing = faces.iter().map(|f| f.id).max().unwrap() + 1000;
    assert!(matches!(lib.face_thumbnail(missing, 160), Err(Error::NotFound(_))));
}
