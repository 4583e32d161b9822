//! Media: images uploaded by accounts, stored by content hash and referred
//! to from documents as `HASH.EXT`.

use serde::{Deserialize, Serialize};

/// The image formats accepted, identified by their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaFormat {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// GIF (animated or not).
    Gif,
    /// WebP.
    Webp,
}

impl MediaFormat {
    /// Every format an upload may have.
    pub const ALL: [MediaFormat; 4] = [MediaFormat::Png, MediaFormat::Jpeg, MediaFormat::Gif, MediaFormat::Webp];

    /// File extension of references and URLs.
    pub fn ext(self) -> &'static str {
        match self {
            MediaFormat::Png => "png",
            MediaFormat::Jpeg => "jpg",
            MediaFormat::Gif => "gif",
            MediaFormat::Webp => "webp",
        }
    }

    /// The format of an extension.
    pub fn from_ext(ext: &str) -> Option<MediaFormat> {
        match ext {
            "png" => Some(MediaFormat::Png),
            "jpg" => Some(MediaFormat::Jpeg),
            "gif" => Some(MediaFormat::Gif),
            "webp" => Some(MediaFormat::Webp),
            _ => None,
        }
    }

    /// `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            MediaFormat::Png => "image/png",
            MediaFormat::Jpeg => "image/jpeg",
            MediaFormat::Gif => "image/gif",
            MediaFormat::Webp => "image/webp",
        }
    }
}

/// What a page needs to show one medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// Its format.
    pub format: MediaFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Widths of the resized variants made of every image wider than them
/// (WebP, named `HASH-WIDTH.webp`).
pub const VARIANT_WIDTHS: [u32; 2] = [320, 640];

impl Media {
    /// The variant widths this image has: those narrower than it, and none
    /// for a GIF (a still variant would lose its animation).
    pub fn variant_widths(&self) -> impl Iterator<Item = u32> + '_ {
        VARIANT_WIDTHS.into_iter().filter(|w| *w < self.width && self.format != MediaFormat::Gif)
    }

    /// The height of its variant `width` pixels wide (the aspect ratio
    /// kept, rounded up).
    pub fn variant_height(&self, width: u32) -> u32 {
        ((u64::from(self.height) * u64::from(width)).div_ceil(u64::from(self.width.max(1))) as u32).max(1)
    }
}

/// A media reference `HASH.EXT` split into its hash and format; `None` when
/// it is not one.
pub fn parse_ref(reference: &str) -> Option<(&str, MediaFormat)> {
    let (hash, ext) = reference.split_once('.')?;
    let hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    Some((hash, MediaFormat::from_ext(ext)?)).filter(|_| hex)
}

/// The storage key of a medium (`media/HASH.EXT`) or of one of its variants
/// (`media/HASH-WIDTH.webp`); the same as its URL path below `/media/`.
pub fn media_key(hash: &str, format: MediaFormat, variant: Option<u32>) -> String {
    match variant {
        None => format!("media/{hash}.{}", format.ext()),
        Some(width) => format!("media/{hash}-{width}.webp"),
    }
}

/// The content hash a media storage key (or media URL path below `/`)
/// names, and the variant width if it is a variant; `None` for anything else.
pub fn parse_key(key: &str) -> Option<(&str, Option<u32>)> {
    let name = key.strip_prefix("media/")?;
    if let Some((hash, width)) = name.strip_suffix(".webp").and_then(|n| n.split_once('-')) {
        let width: u32 = width.parse().ok().filter(|w| VARIANT_WIDTHS.contains(w))?;
        return parse_ref(&format!("{hash}.png")).map(|_| (hash, Some(width)));
    }
    parse_ref(name).map(|(hash, _)| (hash, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_hash_and_a_format() {
        let hash = "ab".repeat(32);
        assert_eq!(parse_ref(&format!("{hash}.png")), Some((hash.as_str(), MediaFormat::Png)));
        for bad in
            [format!("{hash}.svg"), format!("{hash}png"), "x.png".to_string(), format!("{}.png", "AB".repeat(32))]
        {
            assert_eq!(parse_ref(&bad), None, "{bad}");
        }
        let m = Media { format: MediaFormat::Jpeg, width: 500, height: 100 };
        assert_eq!(m.variant_widths().collect::<Vec<_>>(), vec![320]);
        assert_eq!(media_key(&hash, MediaFormat::Jpeg, Some(320)), format!("media/{hash}-320.webp"));
        assert_eq!(parse_key(&format!("media/{hash}-320.webp")), Some((hash.as_str(), Some(320))));
        assert_eq!(parse_key(&format!("media/{hash}.jpg")), Some((hash.as_str(), None)));
        for bad in [format!("media/{hash}-321.webp"), format!("{hash}.jpg"), format!("media/{hash}.exe")] {
            assert_eq!(parse_key(&bad), None, "{bad}");
        }
    }
}
