//! The map page `serve --web` embeds: `web/index.html` and the bundle `web/dist/app.js`,
//! built from `web/src` by `npm run build` and committed, so that `cargo build` needs no Node.

use bytes::Bytes;

use crate::grpc::StaticFile;

const INDEX: &str = include_str!("../../web/index.html");
const APP: &[u8] = include_bytes!("../../web/dist/app.js");

/// The page and its script, the page told the map's size.
pub fn files(width: i32, height: i32) -> Vec<StaticFile> {
    let index = INDEX
        .replace("{{WIDTH}}", &width.to_string())
        .replace("{{HEIGHT}}", &height.to_string());
    vec![
        StaticFile {
            path: "/".into(),
            content_type: "text/html; charset=utf-8",
            body: Bytes::from(index),
        },
        StaticFile {
            path: "/app.js".into(),
            content_type: "text/javascript; charset=utf-8",
            body: Bytes::from_static(APP),
        },
    ]
}
