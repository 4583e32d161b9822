//! Pixel-art sprites for the demo gallery: one small image per item, drawn
//! from its id, the same every time.

use std::io::Cursor;

/// Cells per side of a sprite (the left half is drawn, the right mirrors it).
const CELLS: u32 = 8;
/// Pixels per cell.
const CELL: u32 = 16;

/// A PNG of `CELLS`×`CELLS` cells, symmetric like a creature, in colours
/// and a shape derived from `seed`.
pub fn sprite(seed: &str) -> Vec<u8> {
    let bits = blake3::hash(seed.as_bytes());
    let bits = bits.as_bytes();
    let hue = |b: u8| -> [u8; 3] {
        // A bright colour around the wheel, from one byte.
        let h = f32::from(b) / 255.0 * 6.0;
        let x = (1.0 - (h % 2.0 - 1.0).abs()) * 200.0;
        let (r, g, b) = match h as u32 {
            0 => (200.0, x, 40.0),
            1 => (x, 200.0, 40.0),
            2 => (40.0, 200.0, x),
            3 => (40.0, x, 200.0),
            4 => (x, 40.0, 200.0),
            _ => (200.0, 40.0, x),
        };
        [r as u8 + 40, g as u8 + 40, b as u8 + 40]
    };
    let (body, accent, background) = (hue(bits[0]), hue(bits[1].wrapping_add(85)), [246, 246, 250]);
    let mut image = image::RgbImage::from_pixel(CELLS * CELL, CELLS * CELL, image::Rgb(background));
    for y in 0..CELLS {
        for x in 0..CELLS / 2 {
            let bit = bits[2 + (y * CELLS / 2 + x) as usize % 30] >> (x % 8) & 1;
            let colour = match (bit, (bits[31] >> (y % 8)) & 1) {
                (0, _) => continue,
                (_, 0) => body,
                _ => accent,
            };
            for (cx, cy) in [(x, y), (CELLS - 1 - x, y)] {
                for py in 0..CELL {
                    for px in 0..CELL {
                        image.put_pixel(cx * CELL + px, cy * CELL + py, image::Rgb(colour));
                    }
                }
            }
        }
    }
    let mut png = Vec::new();
    // Writing a PNG to memory cannot fail.
    let _ = image.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png);
    png
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sprites_are_pngs_that_depend_on_their_seed() {
        let a = sprite("132");
        assert_eq!(a, sprite("132"), "the same every time");
        assert_ne!(a, sprite("133"));
        assert!(a.starts_with(b"\x89PNG"));
    }
}
