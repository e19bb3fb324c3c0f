//! `clipdex models`: the recommended checkpoints, as a table and as JSON.

use std::process::Command;

use serde_json::Value;

fn models(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clipdex")).arg("models").args(args).output().unwrap()
}

#[test]
fn models_lists_loadable_checkpoints_with_sourced_figures() {
    let out = models(&["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = doc["models"].as_array().unwrap();
    assert!(list.len() >= 6);
    for m in list {
        let family = m["family"].as_str().unwrap();
        assert!(["clip", "open_clip", "mobileclip", "siglip", "chinese_clip"].contains(&family), "{m}");
        assert!(m["weights_mb"].as_u64().unwrap() > 100 && m["embedding_width"].as_u64().unwrap() >= 512, "{m}");
        // Not measured here: null, and the note says so.
        assert!(m["image_embed_ms"].is_null() && m["text_query_ms"].is_null(), "{m}");
        for p in m["published"].as_array().unwrap() {
            assert!(p["value"].as_f64().unwrap() > 0.0 && !p["source"].as_str().unwrap().is_empty(), "{p}");
        }
    }
    assert!(doc["note"].as_str().unwrap().contains("not measured"));
    let ids: Vec<&str> = list.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let picks = doc["recommendation"].as_array().unwrap();
    assert_eq!(picks.len(), 3);
    assert!(picks.iter().all(|p| ids.contains(&p["id"].as_str().unwrap())), "{picks:?}");
    let dfn = list.iter().find(|m| m["id"] == "apple/DFN5B-CLIP-ViT-H-14-378").unwrap();
    assert_eq!((dfn["family"].as_str(), dfn["image_size"].as_u64()), (Some("open_clip"), Some(378)));

    let human = models(&[]);
    assert!(human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("best quality: apple/DFN5B-CLIP-ViT-H-14-378") && text.contains("Sources:"), "{text}");
}
