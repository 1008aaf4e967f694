//! Pixel and tensor formats: the plain types that specs and manifests describe (a colour, a
//! tensor's layout, channel order and value range) and that [`super::composite`] converts
//! between. Specs, manifests and compositing depend on this module; it depends on none of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::FilterError;

/// An 8-bit RGB colour; written `#rrggbb` in specs and manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rgb {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl FromStr for Rgb {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FilterError::BadColor(s.to_owned());
        let hex = s.strip_prefix('#').ok_or_else(bad)?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
        Ok(Rgb {
            r: channel(0)?,
            g: channel(2)?,
            b: channel(4)?,
        })
    }
}

impl TryFrom<String> for Rgb {
    type Error = FilterError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }
}

impl From<Rgb> for String {
    fn from(c: Rgb) -> String {
        c.to_string()
    }
}

/// Tensor memory layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    #[serde(rename = "NCHW", alias = "nchw")]
    Nchw,
    #[serde(rename = "NHWC", alias = "nhwc")]
    Nhwc,
}

/// Channel order of a colour tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColorOrder {
    #[default]
    #[serde(rename = "RGB", alias = "rgb")]
    Rgb,
    #[serde(rename = "BGR", alias = "bgr")]
    Bgr,
}

/// Value range of a colour tensor's channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueRange {
    #[default]
    #[serde(rename = "0..1")]
    ZeroToOne,
    #[serde(rename = "0..255")]
    ZeroTo255,
    #[serde(rename = "-1..1")]
    MinusOneToOne,
}

/// How a frame fits a model input of another aspect ratio.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Fit {
    /// Scaled to the input's size, whatever the aspect ratio.
    #[default]
    Stretch,
    /// Scaled to fit inside, aspect ratio kept, centred; the rest is padded with black (what
    /// keypoint models trained on square crops expect).
    Contain,
}

impl Fit {
    pub fn is_stretch(&self) -> bool {
        *self == Fit::Stretch
    }

    /// The part of a `frame_w` x `frame_h` frame that maps onto a `w` x `h` tensor.
    pub fn view(self, frame_w: u32, frame_h: u32, w: u32, h: u32) -> View {
        let (fw, fh) = (frame_w as f32, frame_h as f32);
        let whole = View {
            x: 0.0,
            y: 0.0,
            width: fw,
            height: fh,
        };
        if self == Fit::Stretch || frame_w == 0 || frame_h == 0 || w == 0 || h == 0 {
            return whole;
        }
        View::around(fw / 2.0, fh / 2.0, fw, fh, w, h)
    }
}

/// A rectangle in frame pixels (it may reach beyond the frame) that is stretched onto the whole
/// model input: what the model sees. Outside the frame the input is black.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

impl View {
    /// The smallest view with the `w` x `h` tensor's aspect ratio that is centred on `(cx, cy)`
    /// and holds a `min_w` x `min_h` box.
    pub fn around(cx: f32, cy: f32, min_w: f32, min_h: f32, w: u32, h: u32) -> View {
        let aspect = w as f32 / h.max(1) as f32;
        let (width, height) = if min_w >= min_h * aspect {
            (min_w, min_w / aspect)
        } else {
            (min_h * aspect, min_h)
        };
        View {
            x: cx - width / 2.0,
            y: cy - height / 2.0,
            width,
            height,
        }
    }

    /// Frame coordinates of a point given in `w` x `h` tensor pixels.
    pub fn to_frame(&self, (tx, ty): (f32, f32), w: u32, h: u32) -> (f32, f32) {
        (
            self.x + tx * self.width / w.max(1) as f32,
            self.y + ty * self.height / h.max(1) as f32,
        )
    }
}

/// How a model wants its input tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorFormat {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub color_order: ColorOrder,
    pub range: ValueRange,
}

impl TensorFormat {
    /// Number of f32 values in one tensor (batch 1, three channels).
    pub fn len(&self) -> usize {
        (self.width * self.height * 3) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape as ONNX wants it: `[1, 3, h, w]` or `[1, h, w, 3]`.
    pub fn shape(&self) -> [i64; 4] {
        let (w, h) = (i64::from(self.width), i64::from(self.height));
        match self.layout {
            Layout::Nchw => [1, 3, h, w],
            Layout::Nhwc => [1, h, w, 3],
        }
    }

    /// Index of channel `c` (0 = R, 1 = G, 2 = B before colour-order mapping) at pixel `(x, y)`.
    pub fn index(&self, x: u32, y: u32, c: u32) -> usize {
        let c = match self.color_order {
            ColorOrder::Rgb => c,
            ColorOrder::Bgr => 2 - c,
        };
        let (w, h) = (self.width as usize, self.height as usize);
        match self.layout {
            Layout::Nchw => c as usize * w * h + y as usize * w + x as usize,
            Layout::Nhwc => (y as usize * w + x as usize) * 3 + c as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_parse_and_print_as_hex() {
        assert_eq!(
            "#00ff7F".parse::<Rgb>().unwrap(),
            Rgb {
                r: 0,
                g: 255,
                b: 127
            }
        );
        assert_eq!(
            Rgb {
                r: 1,
                g: 171,
                b: 255
            }
            .to_string(),
            "#01abff"
        );
        for bad in ["00ff00", "#00ff0", "#00ff000", "#00fg00", "", "#", "#ééé"] {
            assert!(bad.parse::<Rgb>().is_err(), "{bad}");
        }
    }

    #[test]
    fn contain_keeps_the_aspect_ratio_and_centres() {
        let view = |x, y, width, height| View {
            x,
            y,
            width,
            height,
        };
        // 640x480 in a square input: the view is 640x640, 80 px above and below the frame.
        assert_eq!(
            Fit::Contain.view(640, 480, 256, 256),
            view(0.0, -80.0, 640.0, 640.0)
        );
        assert_eq!(
            Fit::Contain.view(480, 640, 256, 256),
            view(-80.0, 0.0, 640.0, 640.0)
        );
        assert_eq!(
            Fit::Contain.view(1280, 720, 256, 128),
            view(-80.0, 0.0, 1440.0, 720.0)
        );
        assert_eq!(
            Fit::Stretch.view(640, 480, 256, 256),
            view(0.0, 0.0, 640.0, 480.0)
        );
        assert_eq!(Fit::Contain.view(0, 0, 256, 256), view(0.0, 0.0, 0.0, 0.0));
        let v = Fit::Contain.view(640, 480, 256, 256);
        assert_eq!(v.to_frame((128.0, 128.0), 256, 256), (320.0, 240.0));
        assert_eq!(v.to_frame((0.0, 32.0), 256, 256), (0.0, 0.0));
    }

    #[test]
    fn tensor_indices_follow_layout_and_colour_order() {
        let format = |layout, color_order| TensorFormat {
            width: 4,
            height: 2,
            layout,
            color_order,
            range: ValueRange::ZeroToOne,
        };
        let nchw = format(Layout::Nchw, ColorOrder::Rgb);
        assert_eq!((nchw.len(), nchw.shape()), (24, [1, 3, 2, 4]));
        // Red of pixel (1, 1): plane 0, row 1, column 1; blue: plane 2.
        assert_eq!((nchw.index(1, 1, 0), nchw.index(1, 1, 2)), (5, 21));
        let nhwc = format(Layout::Nhwc, ColorOrder::Bgr);
        assert_eq!(nhwc.shape(), [1, 2, 4, 3]);
        // BGR: red is the last of the pixel's three values.
        assert_eq!((nhwc.index(1, 1, 0), nhwc.index(1, 1, 2)), (17, 15));
    }
}
