//! `GET /api/openapi.json`: the API described in OpenAPI 3.0. A test walks every path in it
//! against the server, so an endpoint cannot be added or removed without this changing.

use serde_json::{Value, json};

use super::vision::{MAX_CROP_CANDIDATES, MAX_MATCH_TEXTS, MAX_PROMPTS, MAX_TEXT_BYTES};
use super::{DEFAULT_MAX_UPLOAD, MAX_K, MAX_LABELS, MAX_OFFSET, MAX_QUERY_BYTES};
use crate::thumbnail;

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

/// `parameter` made required.
fn required(mut parameter: Value) -> Value {
    parameter["required"] = json!(true);
    parameter
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX},
           "description": "Image id (from search results)"})
}

/// A date filter as the server reads it.
fn date() -> Value {
    json!({"anyOf": [
        {"type": "string", "maxLength": 0},
        {"type": "string", "pattern": "^[0-9]{4}$"},
        {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"},
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"}]})
}

fn search_params() -> Vec<Value> {
    vec![
        query("k", json!({"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 20}), "Results per page"),
        query(
            "offset",
            json!({"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}),
            "Results to skip (paging)",
        ),
        query(
            "under",
            json!({"type": "string", "pattern": "^(/[^\\x00]*)?$"}),
            "Only images with a file under this absolute folder (empty: anywhere)",
        ),
        query(
            "after",
            date(),
            "Only images dated on or after: YYYY, YYYY-MM, YYYY-MM-DD or RFC 3339 (empty: no limit)",
        ),
        query("before", date(), "Only images dated before this"),
        query("tag", json!({"type": "string"}), "Only images auto-tagged with this label"),
        query(
            "person",
            json!({"type": "string"}),
            "Only images of the person of this name (as `person:NAME` in q; a name no person has is a 400 on /api/search)",
        ),
        query(
            "kind",
            json!({"type": "string", "enum": ["all", "photo", "video"], "default": "all"}),
            "Only photos, only videos, or both",
        ),
    ]
}

/// A face as `/api/images/{id}` and `/api/people` show it.
fn face_schema() -> Value {
    json!({"type": "object", "properties": {
        "id": {"type": "integer"}, "image": {"type": "integer"},
        "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4, "description": "x, y, width, height in the upright image's pixels"},
        "score": {"type": "number", "description": "the detector's confidence"},
        "landmarks": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}, "description": "eyes, nose and mouth corners: five [x, y]"},
        "person_id": {"type": "integer", "nullable": true}, "person": {"type": "string", "nullable": true, "description": "the person's name"}}})
}

/// A person as `/api/people` lists it.
fn person_schema() -> Value {
    json!({"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string", "nullable": true}, "hidden": {"type": "boolean"},
        "faces": {"type": "integer"}, "images": {"type": "integer"},
        "representative": {"allOf": [face_schema()], "nullable": true}}})
}

/// `/api/people` and the changes of persons and faces.
fn people_paths() -> Value {
    let person_id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "description": "Person id (from /api/people)"});
    let face_id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "description": "Face id (from /api/images/{id} or /api/people/{id})"});
    let face_id_thumb = face_id.clone();
    let change = json!({
        "summary": "Change a person: rename it (an empty name takes the name away; two persons cannot share one), hide or show it, merge other persons into it. Its faces are then kept with it when faces are grouped again",
        "parameters": [person_id.clone()],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {
            "name": {"type": "string", "maxLength": 200, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}, "hidden": {"type": "boolean"},
            "merge": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "maxItems": super::people::MAX_MERGE, "description": "persons whose faces become this one's"}}}}}},
        "responses": responses(200, ok("The person as changed", json!({"type": "object", "properties": {"person": {"allOf": [person_schema()], "nullable": true}}})), &[400, 404, 415])});
    json!({
        "/api/people": {"get": {
            "summary": "The persons the library's faces are grouped into (as `clipdex people --json`), most faces first",
            "parameters": [query("hidden", json!({"type": "boolean", "default": false}), "Hidden persons too")],
            "responses": responses(200, ok("Persons", json!({"type": "object", "properties": {"people": {"type": "array", "items": person_schema()}}})), &[400])}},
        "/api/people/{id}": {
            "get": {"summary": "One person with its faces, best first", "parameters": [person_id],
                    "responses": responses(200, ok("The person", json!({"type": "object", "properties": {"person": person_schema(), "faces": {"type": "array", "items": face_schema()}}})), &[400, 404])},
            "patch": change.clone(),
            "post": change},
        "/api/faces/{id}/split": {"post": {
            "summary": "Split a face off its person into a person of its own (marked as not its old person)",
            "parameters": [face_id.clone()],
            "responses": responses(200, ok("The new person", json!({"type": "object", "properties": {"face": {"type": "integer"}, "person": {"type": "integer"}}})), &[400, 404])}},
        "/api/faces/{id}/not": {"post": {
            "summary": "Mark a face as not a person: it leaves the person, and grouping never puts it there again",
            "parameters": [face_id],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["person"], "additionalProperties": false, "properties": {
                "person": {"type": "integer", "minimum": 0, "maximum": u64::MAX}}}}}},
            "responses": responses(200, ok("Marked", json!({"type": "object", "properties": {"face": {"type": "integer"}, "not": {"type": "integer"}}})), &[400, 404, 415])}},
        "/api/faces/{id}/thumb": {"get": {
            "summary": "A square JPEG around a face (1.6 times its box), for showing a person by a face",
            "parameters": [face_id_thumb, query("size", json!({"type": "integer", "minimum": thumbnail::MIN_SIZE, "maximum": crate::library::FACE_THUMB_MAX_SIZE, "default": crate::library::FACE_THUMB_SIZE}), "The square's side in pixels (a small face in a small image is not enlarged)")],
            "responses": responses(200, json!({"description": "The face", "content": {"image/jpeg": {}}}), &[400, 404, 422])}},
    })
}

/// The web UI's writes on several photos (`server/bulk.rs`) and the Jobs view's changes.
fn bulk_paths() -> Value {
    let id = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
    let moved = json!({"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "integer"}, "from": {"type": "string", "description": "Where it was in the library"}, "to": {"type": "string", "description": "Where it is in the batch"}}}});
    let skipped = json!({"type": "array", "items": {"type": "object", "properties": {"path": {"type": "string"}, "reason": {"type": "string"}}}});
    let download_responses = responses(
        200,
        json!({"description": format!("A zip of the originals (at most {} MB of them), names made unique", super::download::MAX_DOWNLOAD_BYTES / 1_000_000),
               "content": {"application/zip": {}}}),
        &[400, 404, 415],
    );
    let pass = json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "enum": crate::library::PAUSABLE_PASSES}, "description": "The pass, as /api/jobs names it"});
    let paused = ok(
        "The passes paused now",
        json!({"type": "object", "properties": {
        "name": {"type": "string"}, "paused": {"type": "boolean"}, "paused_passes": {"type": "array", "items": {"type": "string"}}}}),
    );
    json!({
        "/api/duplicates/resolve": {"post": {
            "summary": "Move duplicates out of the library (as `clipdex duplicates --move-to`): each group's chosen photos, or with all every group's photos but the suggested one to keep, into a new batch folder below the duplicates_folder setting; the groups are found again first, and a choice whose photos are no longer grouped together is refused before anything moves",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {
                "groups": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["keep", "move"], "properties": {
                    "keep": id.clone(), "move": {"type": "array", "items": id.clone()}}}},
                "all": {"type": "boolean", "description": "Every group: keep the suggested photo"},
                "threshold": {"type": "number", "exclusiveMinimum": true, "minimum": 0, "maximum": 1, "description": "As GET /api/duplicates?threshold="}}}}}},
            "responses": responses(200, ok("What moved, and the batch that undoes it", json!({"type": "object", "properties": {
                "batch": {"type": "string", "description": "POST /api/duplicates/restore {\"batch\"} puts its files back"},
                "folder": {"type": "string"}, "moved": moved.clone(), "skipped": skipped.clone(), "journal": {"type": "string"}}})), &[400, 404, 415])}},
        "/api/duplicates/restore": {"post": {
            "summary": "Put back the files of a batch of moved duplicates (as `clipdex duplicates --restore FOLDER/BATCH`); a new index pass starts and indexes them again",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["batch"], "properties": {
                "batch": {"type": "string", "description": "As /api/duplicates/resolve named it"}}}}}},
            "responses": responses(200, ok("What was put back", json!({"type": "object", "properties": {
                "restored": moved, "skipped": skipped, "journal": {"type": "string"},
                "indexed": {"type": "boolean", "description": "Whether they were indexed again before the answer (false: the server does not index now)"}}})), &[400, 404, 415])}},
        "/api/tags/add": {"post": {
            "summary": "Give photos a tag by hand: tag:LABEL finds them, and auto-tagging keeps it",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["ids", "tag"], "properties": {
                "ids": {"type": "array", "minItems": 1, "maxItems": super::api::MAX_DISMISS, "items": id},
                "tag": {"type": "string", "minLength": 1, "maxLength": crate::library::MAX_TAG_CHARS, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*\\S[^\\x00-\\x1f\\x7f-\\x9f]*$"}}}}}},
            "responses": responses(200, ok("Tagged", json!({"type": "object", "properties": {"tag": {"type": "string"}, "tagged": {"type": "integer"}}})), &[400, 404, 415])}},
        "/api/download": {
            "get": {
                "summary": "The original files of the photos named, as one zip (stored, streamed as it is made); a link a browser saves straight to disk. An unknown id refuses it; a photo that cannot be read (gone, changed, leading outside the library's folders) is left out and named in NOT INCLUDED.txt inside the zip",
                "parameters": [required(query("ids", json!({"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"}), &format!("Comma-separated ids, at most {}", super::download::MAX_DOWNLOAD_PHOTOS)))],
                "responses": download_responses.clone()},
            "post": {
                "summary": "As GET /api/download, the ids in the body",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["ids"], "additionalProperties": false, "properties": {
                    "ids": {"type": "array", "minItems": 1, "maxItems": super::download::MAX_DOWNLOAD_PHOTOS, "items": id}}}}}},
                "responses": download_responses}},
        "/api/jobs/{name}/pause": {"post": {
            "summary": "Pause a background pass (remembered by the library across restarts; pausing indexing pauses the passes after it too)",
            "parameters": [pass.clone()], "responses": responses(200, paused.clone(), &[404])}},
        "/api/jobs/{name}/resume": {"post": {
            "summary": "Resume a paused background pass",
            "parameters": [pass], "responses": responses(200, paused, &[404])}},
        "/api/failures/retry": {"post": {
            "summary": "Forget why a file could not be indexed and start a pass that tries it again",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["path"], "properties": {
                "path": {"type": "string", "description": "As /api/failures lists it"}, "path_bytes": {"type": "string", "description": "As /api/failures lists it, for a path that is not UTF-8"}}}}}},
            "responses": responses(200, ok("Retrying", json!({"type": "object", "properties": {"retrying": {"type": "string"},
                "indexed": {"type": "boolean", "description": "Whether a pass ran (false: the server does not index now)"},
                "failed_again": {"type": "string", "nullable": true, "description": "Why the file still cannot be indexed"}}})), &[400, 404, 415])}},
    })
}

/// `{"settings": [{name, value, default, about}]}`.
fn settings_schema() -> Value {
    json!({"type": "object", "properties": {"settings": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"},
        "value": {"type": "string", "nullable": true, "description": "The recorded value; null: none recorded, the default applies"},
        "default": {"type": "string"}, "about": {"type": "string"}}}}}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn errors(codes: &[u16]) -> serde_json::Map<String, Value> {
    codes
        .iter()
        .map(|c| (c.to_string(), json!({"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})))
        .collect()
}

fn responses(ok_code: u16, ok_body: Value, error_codes: &[u16]) -> Value {
    let mut r = errors(error_codes);
    r.insert(ok_code.to_string(), ok_body);
    r.insert("401".into(), json!({"description": "Missing or wrong bearer token (when the server has one)"}));
    Value::Object(r)
}

/// A model-heavy endpoint's responses: its 503 also means the heavy queue is full, and says
/// when to come back.
fn heavy(mut r: Value) -> Value {
    r["503"] = json!({
        "description": format!(
            "A model could not be loaded, or the server is busy: model-heavy requests (captions, questions, matching, masks, crops, re-ranking, regions) run at most `serve --heavy-requests` at once (default {}) with at most `--heavy-queue` waiting (default {}); the rest are refused at once",
            super::DEFAULT_HEAVY_RUNNING, super::DEFAULT_HEAVY_WAITING),
        "headers": {"Retry-After": {"description": "When busy: seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    r
}

/// The OpenAPI document.
pub fn openapi() -> Value {
    openapi_with(&[])
}

/// The document of a server with the fine-tuned models `finetuned` registered (by name): the
/// `rerank` parameter lists exactly the values that server takes.
pub fn openapi_with(finetuned: &[String]) -> Value {
    let reranks: Vec<String> =
        std::iter::once("itm".to_string()).chain(finetuned.iter().map(|name| format!("clip:{name}"))).collect();
    let results = json!({"$ref": "#/components/schemas/Results"});
    let mut file_responses = responses(
        200,
        json!({"description": "The file", "content": {"image/*": {}, "video/*": {}}}),
        &[400, 403, 404, 422],
    );
    file_responses["206"] = json!({"description": "The range asked for (Content-Range says which)", "content": {"image/*": {}, "video/*": {}}});
    file_responses["200"]["content"]["image/jpeg"] = json!({});
    file_responses["416"] = json!({"description": "The range lies past the end (Content-Range: bytes */LENGTH)"});
    let upload = json!({"multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary", "description": format!("At most {DEFAULT_MAX_UPLOAD} bytes by default (serve --max-upload)")}}}}});
    let mut search = vec![query(
        "q",
        json!({"type": "string", "maxLength": MAX_QUERY_BYTES}),
        "The query: words, images (#ID) and filters in the query language (see the manual's Searching: `dog -night tag:beach after:2024 camera:fuji width>3000`); may be left out when tag is given. A syntax error is a 400 naming its column",
    )];
    search.extend(search_params());
    search.push(query(
        "crops",
        json!({"type": "boolean", "default": false}),
        "Locate the query in each result with CLIPSeg: results gain `region` (at most 50 results a page; ignored without q, with in=captions or rerank)",
    ));
    search.push(query(
        "in",
        json!({"type": "string", "enum": ["clip", "captions", "text"], "default": "clip"}),
        "Rank by CLIP (blended with caption matches when the library has captions, and with matches of the text in photos when it has read any), by the stored BLIP captions (BM25; ignored without q), or by the text read in photos (text: words, \"quoted phrases\", numbers exactly, one typo in words of 5+ letters; results gain `text`; ignored without q)",
    ));
    search.push(query(
        "caption_weight",
        json!({"type": "number", "minimum": 0, "maximum": 1, "default": 0.3}),
        "Weight of caption matches in a blended CLIP search (reciprocal rank fusion; 0 turns blending off)",
    ));
    search.push(query(
        "rerank",
        json!({"type": "string", "enum": reranks}),
        "Re-rank a text search with BLIP's image-text matching (itm: results gain `itm` and `itc`; it re-scores at most the best 100, so its pages end there) or with a fine-tuned CLIP registered with `serve --finetuned NAME=DIR` (clip:NAME; results gain `finetuned`); ignored without q or with in=captions",
    ));
    search.push(query(
        "rerank_top",
        json!({"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
        "How many results the re-ranker re-scores (at least offset + k)",
    ));
    search.push(query(
        "facets",
        json!({"type": "string", "pattern": "^(year|place|camera|tag)(,(year|place|camera|tag))*$"}),
        "Also count what the query matched (the photos that pass its filters and min_score, at most the best 1000) per year, place, camera and/or tag, comma-separated: the response gains `facets`",
    ));
    let mut by_image =
        vec![query("id", json!({"type": "integer"}), "Search like this indexed image instead of an upload")];
    by_image.push(query(
        "q",
        json!({"type": "string", "maxLength": MAX_QUERY_BYTES}),
        "More terms and filters in the query language, added to the image (a term of weight 1)",
    ));
    by_image.extend(search_params());
    for params in [&mut search, &mut by_image] {
        params.push(query(
            "min_score",
            json!({"type": "number", "minimum": 0, "maximum": 100}),
            "Keep results of at least this relevance (0-100, calibrated per model on the library; 50 beats 99% of unrelated text-photo pairs)",
        ));
        params.push(query(
            "sort",
            json!({"type": "string", "enum": ["score", "date", "-date", "name"], "default": "score"}),
            "Order of the results above the cut-off: best first, oldest first, newest first, by file name (other than score: of the best 1000)",
        ));
    }
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {"title": "clipdex", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Semantic search over a photo library. When the server has a token, every call needs `Authorization: Bearer TOKEN`."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Hit": {"type": "object", "required": ["id", "path", "score"], "properties": {
                    "id": {"type": "integer"}, "path": {"type": "string", "description": "The file, for display (bytes that are not UTF-8 shown as U+FFFD)"},
                    "path_bytes": {"type": "string", "format": "byte", "description": "Only when the path is not UTF-8: base64 of its exact bytes"},
                    "score": {"type": "number", "description": "Cosine similarity (tag searches: the tag's probability; a video: its best frame's cosine)"},
                    "relevance": {"type": "number", "minimum": 0, "maximum": 100, "description": "The score as a relevance from 0 to 100, calibrated per model on the library (absent with in=captions)"},
                    "kind": {"type": "string", "enum": ["photo", "video"]},
                    "time": {"type": "number", "description": "Videos: seconds from the start of the best frame (searches by tag or caption: the video's poster frame)"},
                    "duration": {"type": "number", "description": "Videos: the length in seconds"},
                    "live_video": {"type": "string", "description": "A Live Photo's MOV (served by /api/images/{id}/live); live_video_bytes when not UTF-8"},
                    "raw_path": {"type": "string", "description": "The RAW of a RAW+JPEG pair (the JPEG is indexed); raw_path_bytes when not UTF-8"},
                    "motion_video": {"type": "object", "description": "A Motion Photo's embedded MP4 (served by /api/images/{id}/motion)",
                                     "properties": {"offset": {"type": "integer"}, "length": {"type": "integer"}}},
                    "date": {"type": "integer", "nullable": true, "description": "EXIF date taken, else file time; seconds since the epoch"},
                    "width": {"type": "integer", "nullable": true}, "height": {"type": "integer", "nullable": true},
                    "place": {"$ref": "#/components/schemas/Place"},
                    "region": {"type": "object", "nullable": true, "description": "With crops: the region that best shows the query, or null",
                               "properties": {"box": {"type": "array", "items": {"type": "integer"}, "description": "[x, y, width, height] in upright pixels"},
                                              "area": {"type": "number"}, "mean_probability": {"type": "number"}}},
                    "caption": {"type": "string", "description": "With in=captions: the caption matched (score is then its BM25 score)"},
                    "caption_score": {"type": "number", "nullable": true, "description": "Blended searches: the caption's BM25 score, null when it did not match"},
                    "blended": {"type": "number", "description": "Blended searches: the fused score results are ordered by"},
                    "finetuned": {"type": "number", "nullable": true, "description": "Re-ranked searches: the fine-tuned model's cosine, which orders the results (null when the photo could not be read)"},
                    "itm": {"type": "number", "nullable": true, "description": "rerank=itm: BLIP's match probability, which orders the results (null when the photo could not be read)"},
                    "itc": {"type": "number", "nullable": true, "description": "rerank=itm: BLIP's image-text cosine"},
                    "text": {"type": "object", "description": "With in=text, and blended searches where the photo's text matched: the lines that matched and their boxes (with in=text, score is the text's BM25 score)",
                             "properties": {"snippet": {"type": "string"}, "boxes": {"type": "array", "items": {"$ref": "#/components/schemas/Quad"}}}}}},
                "Quad": {"type": "array", "minItems": 4, "maxItems": 4, "description": "A box in the photo's pixels: top-left, top-right, bottom-right, bottom-left [x, y]",
                         "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}},
                "TextLine": {"type": "object", "required": ["text", "score", "box"], "properties": {
                    "text": {"type": "string"}, "score": {"type": "number", "description": "The recogniser's confidence, 0 to 1"},
                    "box": {"$ref": "#/components/schemas/Quad"}}},
                "Results": {"type": "object", "required": ["results", "took_ms"], "properties": {
                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}}, "took_ms": {"type": "number"},
                    "facets": {"type": "object", "description": "With facets=: for each facet asked for, its values most frequent first (at most 50)",
                               "additionalProperties": {"type": "array", "items": {"$ref": "#/components/schemas/FacetValue"}}}}},
                "FacetValue": {"type": "object", "required": ["value", "count"], "properties": {
                    "value": {"type": "string", "description": "The year (\"2024\"), the city, the camera or the tag"},
                    "region": {"type": "string", "nullable": true, "description": "Places: the city's region"},
                    "country": {"type": "string", "description": "Places: the city's country"},
                    "count": {"type": "integer", "description": "Matched photos with this value"}}},
                "Place": {"type": "object", "nullable": true, "required": ["city", "region", "country", "lat", "lon", "geonameid"],
                          "description": "Where the photo was taken: its GPS position and the nearest city of 1,000+ inhabitants (GeoNames, CC BY 4.0) within 150 km; null without GPS",
                          "properties": {"city": {"type": "string"}, "region": {"type": "string", "nullable": true}, "country": {"type": "string"},
                                         "lat": {"type": "number"}, "lon": {"type": "number"}, "geonameid": {"type": "integer"}}},
                "Tag": {"type": "object", "properties": {"label": {"type": "string"}, "probability": {"type": "number"}, "cosine": {"type": "number"}}},
            }
        },
        // A server without a token takes requests without one: the bearer token is optional.
        "security": [{}, {"bearer": []}],
        "paths": {
            "/api/search": {"get": {
                "summary": "Text-to-image search (or tag search without q)", "parameters": search,
                "responses": heavy(responses(200, ok("Ranked results", results.clone()), &[400, 503]))}},
            "/api/search/image": {"post": {
                "summary": "Image-to-image search: an uploaded image, or an indexed one by id (query or JSON body {\"id\"})",
                "parameters": by_image,
                "requestBody": {"required": true, "content": {
                    "multipart/form-data": upload["multipart/form-data"].clone(),
                    "application/json": {"schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer", "minimum": 0, "maximum": u64::MAX}}}}}},
                "responses": responses(200, ok("Ranked results", results), &[400, 404, 413, 415, 503])}},
            "/api/images/{id}": {"get": {
                "summary": "Image metadata: paths, size, EXIF, tags (caption when present), the text read in it", "parameters": [id_param()],
                "responses": responses(200, ok("The image", json!({"type": "object", "properties": {
                    "id": {"type": "integer"}, "date": {"type": "integer"}, "hash": {"type": "string"}, "size": {"type": "integer"},
                    "width": {"type": "integer"}, "height": {"type": "integer"}, "modified": {"type": "integer"},
                    "taken": {"type": "integer", "nullable": true}, "camera": {"type": "string", "nullable": true},
                    "lens": {"type": "string", "description": "EXIF lens make and model; absent when not recorded"},
                    "gps": {"type": "array", "items": {"type": "number"}, "nullable": true},
                    "place": {"$ref": "#/components/schemas/Place"},
                    "paths": {"type": "array", "items": {"type": "string"}},
                    "paths_bytes": {"type": "array", "items": {"type": "string", "format": "byte", "nullable": true}, "description": "Only when a path is not UTF-8: base64 of each path's exact bytes (null for UTF-8 ones)"},
                    "live_video": {"type": "string", "description": "A Live Photo's MOV; live_video_bytes when not UTF-8"},
                    "raw_path": {"type": "string", "description": "The RAW of a RAW+JPEG pair; raw_path_bytes when not UTF-8"},
                    "motion_video": {"type": "object", "properties": {"offset": {"type": "integer"}, "length": {"type": "integer"}}, "description": "A Motion Photo's embedded MP4"},
                    "motion_video_problem": {"type": "string", "description": "Why a photo that claims to be a Motion Photo has no motion video"},
                    "live_video_problem": {"type": "string", "description": "Why its Live Photo video cannot be played: the failure recorded for the MOV (unreadable, not a movie, or gone since the pass that paired it)"},
                    "tags": {"type": "array", "items": {"$ref": "#/components/schemas/Tag"}},
                    "faces": {"type": "array", "items": face_schema(), "description": "the faces found in it, with their persons"},
                    "caption": {"type": "string"},
                    "text": {"type": "array", "nullable": true, "items": {"$ref": "#/components/schemas/TextLine"},
                             "description": "The lines of text read in it (ocr --library), in reading order; null when its text was not read"}}})), &[400, 404])}},
            "/api/images/{id}/thumb": {"get": {
                "summary": "JPEG thumbnail, upright, made once and cached in the database folder",
                "parameters": [id_param(), query("size", json!({"type": "integer", "minimum": thumbnail::MIN_SIZE, "maximum": thumbnail::MAX_SIZE, "default": 256}), "Longer side in pixels"),
                               query("time", json!({"type": "number", "minimum": 0}), "Videos: the frame shown at this many seconds, made now and not cached (default: the poster frame; a photo answers 400)")],
                "responses": responses(200, json!({"description": "The thumbnail", "content": {"image/jpeg": {}}}), &[400, 403, 404, 422])}},
            "/api/images/{id}/file": {"get": {
                "summary": "The original file (only if it lies inside a library folder, symbolic links resolved), streamed; one byte range may be asked for (video players seek with them). With format=jpeg: a JPEG rendition a browser can show (HEIC, RAW, JPEG XL, AVIF), upright, made once and cached; renditions are made two at a time with at most 16 waiting (more: 503 with Retry-After), and one whose client went away is given up",
                "parameters": [id_param(),
                               query("format", json!({"type": "string", "enum": ["jpeg"]}), "jpeg: a JPEG rendition instead of the original bytes (left out: the original file)"),
                               query("size", json!({"type": "integer", "minimum": thumbnail::MIN_SIZE, "maximum": thumbnail::DISPLAY_MAX_SIZE, "default": thumbnail::DISPLAY_MAX_SIZE}), "With format=jpeg: the rendition's longer side at most, in pixels (never enlarged)"),
                               {"name": "Range", "in": "header", "required": false, "schema": {"type": "string"},
                                            "description": "bytes=START-END, bytes=START- or bytes=-LAST (several ranges: the whole file)"}],
                "responses": file_responses.clone()}},
            "/api/images/{id}/live": {"get": {
                "summary": "A Live Photo's video (the MOV beside the photo, with its name), streamed as the file is, byte ranges included; 404 when the photo has none",
                "parameters": [id_param(), {"name": "Range", "in": "header", "required": false, "schema": {"type": "string"},
                                            "description": "bytes=START-END, bytes=START- or bytes=-LAST"}],
                "responses": file_responses.clone()}},
            "/api/images/{id}/motion": {"get": {
                "summary": "A Motion Photo's embedded MP4 (the bytes its XMP points at, checked to be an MP4 when indexed), streamed as a file of its own, byte ranges counted within it; 404 when the photo has none",
                "parameters": [id_param(), {"name": "Range", "in": "header", "required": false, "schema": {"type": "string"},
                                            "description": "bytes=START-END, bytes=START- or bytes=-LAST"}],
                "responses": file_responses}},
            "/api/images/{id}/ask": {"post": {
                "summary": "Visual question answering (BLIP VQA, serve's --vqa-model, loaded on first use)",
                "parameters": [id_param()],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["question"], "properties": {
                    "question": {"type": "string", "pattern": "\\S", "maxLength": MAX_TEXT_BYTES}}}}}},
                "responses": heavy(responses(200, ok("The answer", json!({"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}}})), &[400, 403, 404, 415, 422, 503]))}},
            "/api/images/{id}/caption": {"post": {
                "summary": "Caption the photo now with BLIP (serve's --caption-model) and store the caption",
                "parameters": [id_param()],
                "responses": heavy(responses(200, ok("The caption", json!({"type": "object", "properties": {"caption": {"type": "string"}}})), &[400, 403, 404, 422, 503]))}},
            "/api/images/{id}/match": {"post": {
                "summary": "Image-text matching (BLIP ITM probability and ITC cosine, serve's --itm-model) of texts against the photo",
                "parameters": [id_param()],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["texts"], "properties": {
                    "texts": {"type": "array", "minItems": 1, "maxItems": MAX_MATCH_TEXTS, "items": {"type": "string", "pattern": "\\S", "maxLength": MAX_TEXT_BYTES}}}}}}},
                "responses": heavy(responses(200, ok("Scores, in the order of the texts", json!({"type": "object", "properties": {"matches": {"type": "array", "items": {
                    "type": "object", "properties": {"text": {"type": "string"}, "itm": {"type": "number"}, "itc": {"type": "number"}}}}}})), &[400, 403, 404, 415, 422, 503]))}},
            "/api/images/{id}/segment": {"get": {
                "summary": format!("CLIPSeg: where in the photo the prompts are. A PNG mask (grey level = probability, the most probable prompt per pixel) the size of the photo reduced to at most {} px on its long side, or with format=json each prompt's regions (boxes in the photo's own pixels)", crate::segment::MAX_MASK_SIDE),
                "parameters": [id_param(),
                    {"name": "prompt", "in": "query", "required": true, "style": "form", "explode": true, "description": format!("What to find; repeat for up to {MAX_PROMPTS} prompts"),
                     "schema": {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS, "items": {"type": "string", "pattern": "\\S", "maxLength": MAX_TEXT_BYTES}}},
                    query("format", json!({"type": "string", "enum": ["png", "json"], "default": "png"}), "The mask, or the regions as JSON"),
                    query("threshold", json!({"type": "number", "minimum": 0, "maximum": 1, "default": crate::segment::DEFAULT_THRESHOLD}), "Probability a pixel needs to belong to a region")],
                "responses": heavy(responses(200, json!({"description": "The mask (image/png) or {width, height, prompts: [{prompt, regions: [{box, area, mean_probability}]}]}",
                    "content": {"image/png": {}, "application/json": {"schema": {"type": "object"}}}}), &[400, 403, 404, 422, 503]))}},
            "/api/crops": {"get": {
                "summary": "Crop search: the regions of the best-matching photos that show the text, most probable first (as `clipdex crop-search --json`)",
                "parameters": [{"name": "q", "in": "query", "required": true, "schema": {"type": "string", "pattern": "\\S", "maxLength": MAX_TEXT_BYTES}, "description": "What to find"},
                    query("k", json!({"type": "integer", "minimum": 1, "maximum": MAX_CROP_CANDIDATES, "default": 10}), "Crops to return"),
                    query("candidates", json!({"type": "integer", "minimum": 1, "maximum": MAX_CROP_CANDIDATES}), "Photos segmented (default 3k, at least 20)"),
                    query("threshold", json!({"type": "number", "minimum": 0, "maximum": 1, "default": crate::segment::DEFAULT_THRESHOLD}), "Probability a pixel needs to belong to a region")],
                "responses": heavy(responses(200, ok("Crops", json!({"type": "object", "properties": {"took_ms": {"type": "number"}, "crops": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "path": {"type": "string"}, "score": {"type": "number"}, "box": {"type": "array", "items": {"type": "integer"}},
                    "area": {"type": "number"}, "mean_probability": {"type": "number"},
                    "kind": {"type": "string", "enum": ["photo", "video"]}, "time": {"type": "number", "description": "Videos: seconds from the start of the frame cropped"},
                    "duration": {"type": "number", "description": "Videos: length in seconds"}}}}}})), &[400, 503]))}},
            "/api/tag": {"post": {
                "summary": "Zero-shot tagging: probabilities of labels for an indexed image (JSON) or an upload (multipart: image, labels, templates)",
                "requestBody": {"required": true, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["labels", "id"], "properties": {
                        "labels": {"oneOf": [{"type": "array", "items": {"type": "string", "pattern": "\\S"}, "minItems": 1, "maxItems": MAX_LABELS},
                                             {"type": "string", "pattern": "[^,\\s]", "description": "comma-separated"}]},
                        "id": {"type": "integer", "minimum": 0, "maximum": u64::MAX},
                        "templates": {"type": "string", "enum": ["single", "photo"], "default": "single"}}}},
                    "multipart/form-data": {"schema": {"type": "object", "required": ["image", "labels"], "properties": {
                        "image": {"type": "string", "format": "binary"}, "labels": {"type": "string", "pattern": "[^,\\s]", "description": "comma-separated"},
                        "templates": {"type": "string", "enum": ["single", "photo"]}}}}}},
                "responses": responses(200, ok("Labels, most probable first", json!({"type": "object", "properties": {
                    "labels": {"type": "array", "items": {"$ref": "#/components/schemas/Tag"}}}})), &[400, 404, 413, 415, 503])}},
            "/api/tags": {"get": {
                "summary": "Auto-tags in use, with how many images carry each",
                "responses": responses(200, ok("Tag counts", json!({"type": "object", "properties": {"tags": {"type": "array", "items": {
                    "type": "object", "properties": {"label": {"type": "string"}, "count": {"type": "integer"}}}}}})), &[])}},
            "/api/places": {"get": {
                "summary": "Where the photos were taken (their GPS positions reverse-geocoded with GeoNames), with how many photos each, most first",
                "responses": responses(200, ok("Place counts", json!({"type": "object", "required": ["places", "located", "unplaced"], "properties": {
                    "places": {"type": "array", "items": {"type": "object", "required": ["city", "region", "country", "count"], "properties": {
                        "city": {"type": "string"}, "region": {"type": "string", "nullable": true}, "country": {"type": "string"}, "count": {"type": "integer"}}}},
                    "located": {"type": "integer", "description": "Images with a GPS position"},
                    "unplaced": {"type": "integer", "description": "Images with a position more than 150 km from any town"}}})), &[])}},
            "/api/duplicates": {"get": {
                "summary": "Near-duplicate groups (as `clipdex duplicates --json`): close in the vector index, confirmed by a perceptual hash; the best copy first",
                "parameters": [query("threshold", json!({"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1, "default": crate::query::duplicates::DEFAULT_THRESHOLD}), "Cosine similarity from which two photos are candidates")],
                "responses": responses(200, ok("Groups, most similar first", json!({"type": "object", "properties": {"groups": {"type": "array", "items": {
                    "type": "object", "properties": {
                        "images": {"type": "array", "items": {"type": "object", "properties": {
                            "id": {"type": "integer"}, "path": {"type": "string"}, "width": {"type": "integer"}, "height": {"type": "integer"},
                            "size": {"type": "integer"}, "date": {"type": "integer", "description": "seconds since the epoch"}}}},
                        "similarity": {"type": "number", "description": "the lowest cosine of the pairs joining the group"},
                        "keep": {"type": "integer", "description": "the suggested one to keep: resolution, then file size, then earliest date"}}}}}})), &[400])}},
            "/api/duplicates/dismiss": {"post": {
                "summary": "Mark images as not duplicates of each other (remembered)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["ids"], "properties": {
                    "ids": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "minItems": 2, "maxItems": super::api::MAX_DISMISS, "uniqueItems": true}}}}}},
                "responses": responses(200, ok("Marked", json!({"type": "object", "properties": {"dismissed": {"type": "array", "items": {"type": "integer"}}}})), &[400, 404, 415])}},
            "/api/status": {"get": {
                "summary": "Library counts, model, search index state, and the background indexer's progress",
                "responses": responses(200, ok("Status", json!({"type": "object", "properties": {
                    "library": {"type": "object", "description": "as `clipdex stats --json`"},
                    "finetuned": {"type": "array", "items": {"type": "string"}, "description": "Names of the fine-tuned models searches may be re-ranked with (rerank=clip:NAME)"},
                    "stages": {"type": "object", "description": "Each stage's progress as {done, total} (null: switched off or not run yet): embedding (files of the running pass), tagging, captioning (images of the library), reading_text, finding_faces and thumbnails (the background run's position)",
                        "properties": {"embedding": {"type": "object"}, "tagging": {"type": "object", "nullable": true}, "captioning": {"type": "object", "nullable": true}, "reading_text": {"type": "object", "nullable": true}, "finding_faces": {"type": "object", "nullable": true}, "thumbnails": {"type": "object", "nullable": true}}},
                    "indexer": {"type": "object", "properties": {
                        "state": {"type": "string", "enum": ["off", "starting", "indexing", "watching", "no_folders", "failed", "paused", "waiting_for_model"]},
                        "waiting_for_model": {"type": "string", "nullable": true, "description": "The model the indexer waits for (state waiting_for_model)"},
                        "retry_in_s": {"type": "integer", "nullable": true, "description": "Seconds until the model is tried again"},
                        "done": {"type": "integer"}, "total": {"type": "integer"}, "passes": {"type": "integer"},
                        "last_pass": {"type": "object", "nullable": true}, "last_error": {"type": "string", "nullable": true}}}}})), &[])}},
            "/api/timeline": {"get": {
                "summary": "The library newest first (EXIF date, else the file's time; photos and videos), a page at a time",
                "parameters": [
                    query("cursor", json!({"type": "string", "pattern": "^(-?[0-9]{1,18}_[0-9]{1,19})?$"}), "Where the page starts: the `next` of the previous page (absent or empty: the newest)"),
                    query("limit", json!({"type": "integer", "minimum": 1, "maximum": super::api::MAX_TIMELINE_LIMIT, "default": 60}), "Items per page"),
                    query("month", json!({"anyOf": [{"type": "string", "maxLength": 0}, {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"}, {"type": "string", "enum": ["0000-00"]}]}), "YYYY-MM: start at the newest item of that month (0000-00: of the undated); ignored with a cursor"),
                    query("folder", json!({"type": "string", "pattern": "^(/[^\\x00]*)?$"}), "Only images with a file at or under this absolute folder (empty: all)")],
                "responses": responses(200, ok("A page", json!({"type": "object", "properties": {
                    "items": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "integer"}, "path": {"type": "string"}, "date": {"type": "integer", "description": "seconds since the epoch"},
                        "month": {"type": "string", "description": "YYYY-MM of date (0000-00: outside years 1 to 9999)"},
                        "width": {"type": "integer"}, "height": {"type": "integer"}, "kind": {"type": "string", "enum": ["photo", "video"]},
                        "duration": {"type": "number", "description": "a video's length in seconds"},
                        "caption": {"type": "string", "description": "the stored caption, when there is one"}}}},
                    "next": {"type": "string", "nullable": true, "description": "the cursor of the next page (null: no more)"}}})), &[400])}},
            "/api/timeline/months": {"get": {
                "summary": "How many items each month holds, newest first (for a date scrubber)",
                "parameters": [query("folder", json!({"type": "string", "pattern": "^(/[^\\x00]*)?$"}), "Only images with a file at or under this absolute folder (empty: all)")],
                "responses": responses(200, ok("Months", json!({"type": "object", "properties": {"months": {"type": "array", "items": {"type": "object", "properties": {
                    "month": {"type": "string"}, "count": {"type": "integer"}}}}}})), &[400])}},
            "/api/folders": {"get": {
                "summary": "The library's folders with their photo counts, or one folder's subfolders with theirs",
                "parameters": [query("path", json!({"type": "string", "pattern": "^(/[^\\x00]*)?$"}), "A library folder or a folder under one (absent or empty: the library's folders)")],
                "responses": responses(200, ok("Folders", json!({"type": "object", "properties": {
                    "path": {"type": "string", "nullable": true}, "photos": {"type": "integer", "description": "photos and videos directly in path"},
                    "folders": {"type": "array", "items": {"type": "object", "properties": {
                        "path": {"type": "string"}, "name": {"type": "string"}, "photos": {"type": "integer", "description": "photos and videos at or under it"},
                        "subfolders": {"type": "boolean"}}}}}})), &[400, 404])}},
            "/api/roots": {
                "get": {"summary": "The library's folders",
                        "responses": responses(200, ok("Folders", json!({"type": "object", "properties": {"roots": {"type": "array", "items": {"type": "string"}}}})), &[])},
                "post": {"summary": "Add a folder (absolute path); the indexer picks it up",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["path"], "properties": {"path": {"type": "string", "pattern": "^/[^\\x00]*$"}}}}}},
                         "responses": responses(201, ok("The folder as stored (symbolic links resolved)", json!({"type": "object", "properties": {"root": {"type": "string"}}})), &[400, 403, 404, 415])},
                "delete": {"summary": "Remove a folder and forget its photos",
                           "parameters": [{"name": "path", "in": "query", "required": true, "schema": {"type": "string", "pattern": "^/[^\\x00]*$"}, "description": "The folder, as added"}],
                           "responses": responses(200, ok("Photos forgotten", json!({"type": "object", "properties": {"removed": {"type": "integer"}}})), &[400, 403, 404])}},
            "/api/settings": {
                "get": {"summary": "The library's settings (its models, their precision, background jobs), as `clipdex config list --json`",
                        "responses": responses(200, ok("Every setting", settings_schema()), &[])},
                "put": {"summary": "Record settings in the library; they apply at once (models load on their next use, the indexer restarts with them). A null value forgets the recorded one; one bad value changes nothing",
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "minProperties": 1, "additionalProperties": false, "properties": {
                            "model": {"type": "string", "nullable": true, "description": "CLIP model; only while the library has no vectors (then `clipdex reindex`)"},
                            "text_model": {"type": "string", "nullable": true}, "caption_model": {"type": "string", "nullable": true},
                            "vqa_model": {"type": "string", "nullable": true}, "itm_model": {"type": "string", "nullable": true},
                            "seg_model": {"type": "string", "nullable": true}, "ocr_model": {"type": "string", "nullable": true},
                            "face_model": {"type": "string", "nullable": true, "description": "folder of dlib's face models, or none"},
                            "precision": {"type": "string", "nullable": true, "enum": ["f32", "bf16", "int8", "auto", null]},
                            "background_jobs": {"type": "boolean", "nullable": true},
                            "duplicates_folder": {"type": "string", "nullable": true, "pattern": "^/", "description": "Absolute folder outside the library"}}}}}},
                        "responses": responses(200, ok("Every setting, as recorded now", settings_schema()), &[400, 415])}},
            "/api/jobs": {"get": {
                "summary": "The server's background passes (indexing, tagging, captioning, finding faces, thumbnails): each with its progress, rate and time left",
                "responses": responses(200, ok("The passes", json!({"type": "object", "properties": {
                    "state": {"type": "string", "description": "The indexer's state, as in /api/status"},
                    "last_error": {"type": "string", "nullable": true},
                    "failures": {"type": "integer", "description": "Files that could not be indexed (GET /api/failures lists them)"},
                    "jobs": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string", "enum": ["indexing", "tagging", "captioning", "finding_faces", "thumbnails"]},
                        "label": {"type": "string"}, "on": {"type": "boolean", "description": "false: switched off or not run yet"},
                        "done": {"type": "integer"}, "total": {"type": "integer"}, "running": {"type": "boolean"},
                        "rate_per_s": {"type": "number", "nullable": true, "description": "Items a second since the pass's run started (null until it moves)"},
                        "eta_s": {"type": "integer", "nullable": true, "description": "Seconds left at that rate"},
                        "paused": {"type": "boolean", "description": "Paused by POST /api/jobs/{name}/pause"}}}}}})), &[])}},
            "/api/failures": {"get": {
                "summary": "Files that could not be indexed, with why (as `clipdex failures --json`)",
                "parameters": [query("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000}), "Most failures listed (default 200)")],
                "responses": responses(200, ok("The failures", json!({"type": "object", "properties": {
                    "failures": {"type": "array", "items": {"type": "object", "properties": {
                        "path": {"type": "string"}, "path_bytes": {"type": "string"}, "reason": {"type": "string"}, "attempts": {"type": "integer"}}}},
                    "total": {"type": "integer"}}})), &[400])}},
            "/api/cli": {"post": {
                "summary": "Run a clipdex command on the library this server holds (what a `clipdex` command does when it finds the folder library held by the server); only from this machine, with the secret the server wrote to server.secret in the library's folder (header X-Clipdex-Secret)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["args", "cwd"], "properties": {
                    "args": {"type": "array", "items": {"type": "string"}, "description": "The command line without the program name"},
                    "cwd": {"type": "string", "pattern": "^/", "description": "Absolute working directory relative paths are resolved against"},
                    "settings": {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
                                 "description": "[option, value] pairs of the library settings the command asked for (model, precision, ...); the command is refused when they are not the server's"}}}}}},
                "responses": responses(200, ok("What the command printed and its exit status", json!({"type": "object", "properties": {
                    "stdout": {"type": "string"}, "stderr": {"type": "string"}, "exit": {"type": "integer"}}})), &[400, 403, 404, 415])}},
            "/api/cli/proof": {"get": {
                "summary": "Prove that this server knows the secret in server.secret, before a command sends it (or the token): a keyed hash of the nonce and the address the request reached; answered without the token, only from this machine",
                "security": [],
                "parameters": [{"name": "nonce", "in": "query", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{32,128}$"}, "description": "A fresh random nonce"}],
                "responses": responses(200, ok("The proof", json!({"type": "object", "properties": {"proof": {"type": "string"}}})), &[400, 403, 404])}},
            "/api/openapi.json": {"get": {"summary": "This document", "responses": responses(200, ok("OpenAPI 3.0", json!({"type": "object"})), &[])}},
        }
    });
    if let (Some(paths), Value::Object(people)) = (doc["paths"].as_object_mut(), people_paths()) {
        paths.extend(people);
    }
    if let (Some(paths), Value::Object(bulk)) = (doc["paths"].as_object_mut(), bulk_paths()) {
        paths.extend(bulk);
    }
    doc
}
