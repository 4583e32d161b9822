//! `sesame init`: writes an example project.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// The example projects `init` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Example {
    /// A living gallery: item pages, a stable gallery, tag and owner listings.
    Gallery,
    /// A micro-site platform: one site per account at /{handle}/ and a directory.
    Microsites,
}

macro_rules! files {
    ($root:literal: $($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!("../projects/", $root, "/", $path)) as &[u8])),*]
    };
}

const GALLERY: &[(&str, &[u8])] = files!("gallery":
    "sesame.toml",
    "schemas/sprites.json",
    "templates/_base.html",
    "templates/_macros.html",
    "templates/_card.html",
    "templates/index.html",
    "templates/sprite.html",
    "templates/gallery.html",
    "templates/tag.html",
    "templates/owner.html",
    "templates/latest.html",
    "templates/404.html",
    "templates/410.html",
    "templates/_preview.html",
    "templates/manifest.json",
    "static/style.css",
    "static/favicon.svg",
    "static/icon-32.png",
    "static/icon-180.png",
    "static/icon-192.png",
    "static/icon-512.png",
    "static/preview.png",
    "content/sprites.ndjson.gz",
);

const MICROSITES: &[(&str, &[u8])] = files!("microsites":
    "sesame.toml",
    "schemas/sites.json",
    "templates/_base.html",
    "templates/site.html",
    "templates/directory.html",
    "templates/index.html",
    "templates/404.html",
    "templates/410.html",
    "templates/_preview.html",
    "templates/manifest.json",
    "static/style.css",
    "static/favicon.svg",
    "static/icon-32.png",
    "static/icon-180.png",
    "static/icon-192.png",
    "static/icon-512.png",
    "static/preview.png",
    "content/sites.ndjson",
);

impl Example {
    /// The sample content file and the collection it belongs to.
    pub fn content(self) -> (&'static str, &'static str) {
        match self {
            Example::Gallery => ("content/sprites.ndjson.gz", "sprites"),
            Example::Microsites => ("content/sites.ndjson", "sites"),
        }
    }

    fn files(self) -> &'static [(&'static str, &'static [u8])] {
        match self {
            Example::Gallery => GALLERY,
            Example::Microsites => MICROSITES,
        }
    }
}

/// Writes the example into `dir` (created if missing). Refuses to overwrite an
/// existing project.
pub fn write(dir: &Path, example: Example) -> Result<()> {
    if dir.join(sesame_config::CONFIG_FILE).exists() {
        bail!("{} already holds a sesame project (sesame.toml exists)", dir.display());
    }
    for (path, contents) in example.files() {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, contents).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}
