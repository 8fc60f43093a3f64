//! The map: a grid of one-byte cells, Cartesian coordinates, bounds checks and lazy areas.
//!
//! A map file is H lines of W printable ASCII bytes (`' '` is sea, anything else is land). The
//! file's *last* line is row `y = 0`, so `(0, 0)` is the bottom-left corner and `x` grows to
//! the right, `y` upwards. A map can be scaled by `k` (each cell becomes `k x k` cells) without
//! copying: the scale is stored and lookups divide by it, so a huge scaled map costs nothing
//! until cells are asked for, and [`Cells`] yields them one at a time.
//!
//! Nothing here knows about gRPC: errors describe what is wrong and expose a kind
//! ([`AreaError::is_out_of_range`]) that the service maps to a status code.

use std::{
    error::Error,
    fmt, fs,
    iter::FusedIterator,
    path::{Path, PathBuf},
    sync::Arc,
};

/// The embedded default map: 80 x 32 cells of the Earth.
const WORLD: &str = include_str!("world.txt");

/// A rectangular map of one-byte cells, cheap to clone (the cells are shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map {
    /// Row-major cells in file order: index 0 is the first byte of the file's first line.
    cells: Arc<[u8]>,
    /// Width of the unscaled grid, in cells.
    base_width: i32,
    /// Height of the unscaled grid, in cells.
    base_height: i32,
    /// Each stored cell stands for `scale x scale` cells; always >= 1.
    scale: i32,
}

impl Map {
    /// Parses H lines of W printable ASCII bytes; the trailing newline is optional.
    ///
    /// A `\r` before each `\n` is dropped, so a map saved with CRLF line endings still loads.
    ///
    /// # Errors
    ///
    /// [`MapError`] naming the 1-based line for an empty map, an empty or ragged line, a
    /// non-printable or non-ASCII byte, or a grid too large for `i32` coordinates.
    pub fn parse(text: &str) -> Result<Self, MapError> {
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.is_empty() {
            return Err(MapError::Empty);
        }
        let mut cells = Vec::with_capacity(body.len());
        let mut width = 0;
        let mut height = 0;
        for (index, line) in body.split('\n').enumerate() {
            let number = index + 1;
            let line = line.strip_suffix('\r').unwrap_or(line).as_bytes();
            if line.is_empty() {
                return Err(MapError::EmptyLine { line: number });
            }
            if index == 0 {
                width = line.len();
            } else if line.len() != width {
                return Err(MapError::Ragged {
                    line: number,
                    len: line.len(),
                    width,
                });
            }
            if let Some(column) = line.iter().position(|b| !is_printable(*b)) {
                return Err(MapError::BadByte {
                    line: number,
                    column: column + 1,
                    byte: line[column],
                });
            }
            cells.extend_from_slice(line);
            height = number;
        }
        let (Ok(base_width), Ok(base_height)) = (i32::try_from(width), i32::try_from(height))
        else {
            return Err(MapError::TooLarge { width, height });
        };
        Ok(Self {
            cells: cells.into(),
            base_width,
            base_height,
            scale: 1,
        })
    }

    /// Reads and parses a map file.
    ///
    /// # Errors
    ///
    /// [`MapError::File`] naming `path`, wrapping the read or parse error.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, MapError> {
        let path = path.as_ref();
        let in_file = |source| MapError::File {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let text = fs::read_to_string(path).map_err(|e| in_file(MapError::Io(e)))?;
        Self::parse(&text).map_err(in_file)
    }

    /// The embedded default: an 80 x 32 map of the Earth.
    pub fn world() -> Self {
        // The file is ours and a unit test parses it, so failure here is a build-time bug.
        Self::parse(WORLD).expect("embedded world.txt is a valid map")
    }

    /// Returns this map with each cell blown up to `k x k` cells, sharing the same storage.
    ///
    /// Scaling a scaled map multiplies the factors.
    ///
    /// # Errors
    ///
    /// [`MapError::BadScale`] if `k` is 0, or if the scaled width or height no longer fits an
    /// `i32` coordinate, or the cell count no longer fits a `usize`.
    pub fn scaled(&self, k: u32) -> Result<Self, MapError> {
        let bad = || MapError::BadScale {
            scale: k,
            width: self.width(),
            height: self.height(),
        };
        if k == 0 {
            return Err(bad());
        }
        let scale = i32::try_from(k)
            .ok()
            .and_then(|k| self.scale.checked_mul(k))
            .ok_or_else(bad)?;
        let width = self.base_width.checked_mul(scale).ok_or_else(bad)?;
        let height = self.base_height.checked_mul(scale).ok_or_else(bad)?;
        // Cells::len must be exact, so the whole map's cell count has to fit a usize.
        usize::try_from(width)
            .ok()
            .zip(usize::try_from(height).ok())
            .and_then(|(w, h)| w.checked_mul(h))
            .ok_or_else(bad)?;
        Ok(Self {
            cells: Arc::clone(&self.cells),
            base_width: self.base_width,
            base_height: self.base_height,
            scale,
        })
    }

    /// Width in cells, scale included (always > 0).
    pub fn width(&self) -> i32 {
        self.base_width * self.scale
    }

    /// Height in cells, scale included (always > 0).
    pub fn height(&self) -> i32 {
        self.base_height * self.scale
    }

    /// The scale factor: 1 for a parsed map.
    pub fn scale(&self) -> u32 {
        self.scale.unsigned_abs()
    }

    /// Whether `(x, y)` lies on the map.
    pub fn contains(&self, x: i32, y: i32) -> bool {
        (0..self.width()).contains(&x) && (0..self.height()).contains(&y)
    }

    /// The cell at `(x, y)`, or `None` off the map.
    pub fn cell(&self, x: i32, y: i32) -> Option<u8> {
        if !self.contains(x, y) {
            return None;
        }
        // y = 0 is the file's last line, so flip the row; both are non-negative here.
        let row = (self.base_height - 1 - y / self.scale) as usize;
        let column = (x / self.scale) as usize;
        self.cells
            .get(row * self.base_width as usize + column)
            .copied()
    }

    /// The cell at `(x, y)`, or an out-of-range error naming the location and the map size.
    ///
    /// # Errors
    ///
    /// [`AreaError::OutOfRange`] when `(x, y)` is off the map.
    pub fn locate(&self, x: i32, y: i32) -> Result<u8, AreaError> {
        self.cell(x, y).ok_or(AreaError::OutOfRange {
            x,
            y,
            width: self.width(),
            height: self.height(),
        })
    }

    /// The cells of the inclusive rectangle `ll..=ur`, lazily, in reading order.
    ///
    /// Rows run from `ur.1` down to `ll.1`, and `x` ascends within a row.
    ///
    /// # Errors
    ///
    /// [`AreaError::Inverted`] if `ll` is right of or above `ur` (checked first: such an area
    /// is wrong on any map), then [`AreaError::OutOfRange`] for the first corner off the map.
    pub fn area(&self, ll: (i32, i32), ur: (i32, i32)) -> Result<Cells, AreaError> {
        if ll.0 > ur.0 || ll.1 > ur.1 {
            return Err(AreaError::Inverted {
                ll,
                ur,
                width: self.width(),
                height: self.height(),
            });
        }
        self.locate(ll.0, ll.1)?;
        self.locate(ur.0, ur.1)?;
        // Both corners are on the map, and `scaled` made sure the map's cell count fits.
        let columns = (ur.0 - ll.0) as usize + 1;
        let rows = (ur.1 - ll.1) as usize + 1;
        Ok(Cells {
            map: self.clone(),
            x_min: ll.0,
            x_max: ur.0,
            y_min: ll.1,
            x: ll.0,
            y: ur.1,
            remaining: columns * rows,
        })
    }
}

/// Printable ASCII: space through tilde.
fn is_printable(b: u8) -> bool {
    (b' '..=b'~').contains(&b)
}

/// A lazy iterator over an area's cells as `(x, y, byte)`, in reading order.
///
/// It holds a cheap clone of the map, so it can outlive the borrow it came from (for example,
/// move into a streaming task).
#[derive(Clone, Debug)]
pub struct Cells {
    map: Map,
    x_min: i32,
    x_max: i32,
    y_min: i32,
    /// The next cell to yield.
    x: i32,
    y: i32,
    remaining: usize,
}

impl Iterator for Cells {
    type Item = (i32, i32, u8);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let (x, y) = (self.x, self.y);
        self.remaining -= 1;
        if x < self.x_max {
            self.x += 1;
        } else if y > self.y_min {
            self.x = self.x_min;
            self.y -= 1;
        }
        // `area` checked both corners, so every cell in between is on the map.
        let byte = self.map.cell(x, y)?;
        Some((x, y, byte))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Cells {}

impl FusedIterator for Cells {}

/// Why a map could not be read, parsed or scaled.
#[derive(Debug)]
pub enum MapError {
    /// A byte outside printable ASCII (space to tilde).
    BadByte {
        /// 1-based line number.
        line: usize,
        /// 1-based byte column.
        column: usize,
        /// The offending byte.
        byte: u8,
    },
    /// A scale of 0, or one that makes the map too large.
    BadScale {
        /// The requested factor.
        scale: u32,
        /// The map's width before scaling.
        width: i32,
        /// The map's height before scaling.
        height: i32,
    },
    /// The text has no lines at all.
    Empty,
    /// A line with no cells.
    EmptyLine {
        /// 1-based line number.
        line: usize,
    },
    /// An error while loading a file, with its path.
    File {
        /// The map file.
        path: PathBuf,
        /// What went wrong reading or parsing it.
        source: Box<Self>,
    },
    /// The file could not be read.
    Io(std::io::Error),
    /// A line whose length differs from the first line's.
    Ragged {
        /// 1-based line number.
        line: usize,
        /// Its length in bytes.
        len: usize,
        /// The width set by line 1.
        width: usize,
    },
    /// More rows or columns than an `i32` coordinate can address.
    TooLarge {
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadByte { line, column, byte } => write!(
                f,
                "line {line}, column {column}: byte 0x{byte:02x} is not printable ASCII"
            ),
            Self::BadScale {
                scale,
                width,
                height,
            } => write!(
                f,
                "scale {scale} is not allowed for the {width} x {height} map \
                 (it must be at least 1 and keep the size within i32)"
            ),
            Self::Empty => f.write_str("line 1: the map is empty"),
            Self::EmptyLine { line } => write!(f, "line {line}: the line is empty"),
            Self::File { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Io(e) => write!(f, "cannot read the map: {e}"),
            Self::Ragged { line, len, width } => write!(
                f,
                "line {line}: {len} bytes, but line 1 set the width to {width}"
            ),
            Self::TooLarge { width, height } => {
                write!(f, "a {width} x {height} map is too large")
            }
        }
    }
}

impl Error for MapError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::File { source, .. } => Some(source.as_ref()),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Which kind of bad request an [`AreaError`] is, for mapping to a status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AreaErrorKind {
    /// The request is malformed on any map (gRPC would say INVALID_ARGUMENT).
    Invalid,
    /// The request is well formed but falls off this map (gRPC would say OUT_OF_RANGE).
    OutOfRange,
}

/// Why a location or area cannot be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AreaError {
    /// The lower-left corner is right of or above the upper-right corner.
    Inverted {
        /// The lower-left corner as given.
        ll: (i32, i32),
        /// The upper-right corner as given.
        ur: (i32, i32),
        /// The map's width.
        width: i32,
        /// The map's height.
        height: i32,
    },
    /// A location off the map.
    OutOfRange {
        /// Column.
        x: i32,
        /// Row.
        y: i32,
        /// The map's width.
        width: i32,
        /// The map's height.
        height: i32,
    },
}

impl AreaError {
    /// Which kind of error this is.
    pub fn kind(&self) -> AreaErrorKind {
        match self {
            Self::Inverted { .. } => AreaErrorKind::Invalid,
            Self::OutOfRange { .. } => AreaErrorKind::OutOfRange,
        }
    }

    /// Whether a location fell off the map (as opposed to a malformed request).
    pub fn is_out_of_range(&self) -> bool {
        self.kind() == AreaErrorKind::OutOfRange
    }
}

impl fmt::Display for AreaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inverted {
                ll,
                ur,
                width,
                height,
            } => write!(
                f,
                "invalid area: lower-left ({}, {}) is right of or above upper-right ({}, {}) \
                 on the {width} x {height} map",
                ll.0, ll.1, ur.0, ur.1
            ),
            Self::OutOfRange {
                x,
                y,
                width,
                height,
            } => write!(
                f,
                "location ({x}, {y}) is outside the {width} x {height} map"
            ),
        }
    }
}

impl Error for AreaError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 x 3, every cell distinct: "abcd" is the top row (y = 2), "ijkl" the bottom (y = 0).
    fn small() -> Map {
        Map::parse("abcd\nefgh\nijkl\n").unwrap()
    }

    #[test]
    fn world_is_80_by_32() {
        let map = Map::world();
        assert_eq!((map.width(), map.height(), map.scale()), (80, 32, 1));
        let lines: Vec<&str> = WORLD.lines().collect();
        assert_eq!(lines.len(), 32);
        assert!(lines.iter().all(|l| l.len() == 80));
        assert!(WORLD.bytes().any(|b| b == b' ') && WORLD.bytes().any(|b| b == b'#'));
    }

    #[test]
    fn corners_are_cartesian() {
        let map = Map::world();
        let lines: Vec<&[u8]> = WORLD.lines().map(str::as_bytes).collect();
        assert_eq!(map.cell(0, 0), Some(lines[31][0]));
        assert_eq!(map.cell(79, 31), Some(lines[0][79]));
        assert_eq!(map.cell(0, 31), Some(lines[0][0]));
        assert_eq!(map.cell(79, 0), Some(lines[31][79]));

        let map = small();
        assert_eq!(map.cell(0, 0), Some(b'i'));
        assert_eq!(map.cell(3, 2), Some(b'd'));
        assert_eq!(map.cell(0, 2), Some(b'a'));
        assert_eq!(map.cell(3, 0), Some(b'l'));
        assert_eq!(map.cell(1, 1), Some(b'f'));
    }

    #[test]
    fn cell_off_the_map_is_none() {
        let map = small();
        for (x, y) in [(-1, 0), (0, -1), (4, 0), (0, 3), (i32::MIN, i32::MAX)] {
            assert_eq!(map.cell(x, y), None, "({x}, {y})");
        }
    }

    #[test]
    fn parse_accepts_missing_final_newline_and_crlf() {
        assert_eq!(
            Map::parse("ab\ncd").unwrap(),
            Map::parse("ab\ncd\n").unwrap()
        );
        assert_eq!(
            Map::parse("ab\r\ncd\r\n").unwrap(),
            Map::parse("ab\ncd").unwrap()
        );
    }

    #[test]
    fn parse_refuses_empty() {
        for text in ["", "\n"] {
            let err = Map::parse(text).unwrap_err();
            assert!(matches!(err, MapError::Empty), "{text:?}");
            assert!(err.to_string().contains("line 1"));
        }
        let err = Map::parse("ab\n\ncd").unwrap_err();
        assert!(matches!(err, MapError::EmptyLine { line: 2 }));
        assert_eq!(err.to_string(), "line 2: the line is empty");
    }

    #[test]
    fn parse_refuses_ragged_naming_the_line() {
        let err = Map::parse("abc\nabc\nab\nabc").unwrap_err();
        assert!(matches!(
            err,
            MapError::Ragged {
                line: 3,
                len: 2,
                width: 3
            }
        ));
        assert_eq!(
            err.to_string(),
            "line 3: 2 bytes, but line 1 set the width to 3"
        );
        assert!(matches!(
            Map::parse("ab\nabc").unwrap_err(),
            MapError::Ragged { line: 2, .. }
        ));
    }

    #[test]
    fn parse_refuses_non_printable_and_non_ascii() {
        let err = Map::parse("ab\na\t\n").unwrap_err();
        assert!(matches!(
            err,
            MapError::BadByte {
                line: 2,
                column: 2,
                byte: b'\t'
            }
        ));
        assert_eq!(
            err.to_string(),
            "line 2, column 2: byte 0x09 is not printable ASCII"
        );
        // 'é' is two bytes in UTF-8; the line is the right length but not ASCII.
        let err = Map::parse("abc\naé\n").unwrap_err();
        assert!(matches!(
            err,
            MapError::BadByte {
                line: 2,
                column: 2,
                byte: 0xc3
            }
        ));
        assert!(Map::parse("a\x7f\n").is_err());
        assert!(Map::parse("a\rb\n").is_err());
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.txt");
        let err = Map::load(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.txt"), "{err}");
        assert!(err.source().is_some());

        let bad = dir.path().join("bad.txt");
        fs::write(&bad, "ab\nc\n").unwrap();
        let err = Map::load(&bad).unwrap_err();
        assert!(err.to_string().contains("bad.txt: line 2"), "{err}");

        let good = dir.path().join("good.txt");
        fs::write(&good, "ab\ncd\n").unwrap();
        assert_eq!(Map::load(&good).unwrap().cell(0, 0), Some(b'c'));
    }

    #[test]
    fn area_in_reading_order() {
        let cells: Vec<_> = small().area((1, 0), (2, 2)).unwrap().collect();
        assert_eq!(
            cells,
            vec![
                (1, 2, b'b'),
                (2, 2, b'c'),
                (1, 1, b'f'),
                (2, 1, b'g'),
                (1, 0, b'j'),
                (2, 0, b'k'),
            ]
        );
    }

    #[test]
    fn whole_area_reads_like_the_file() {
        let text = "abcd\nefgh\nijkl\n";
        let map = Map::parse(text).unwrap();
        let bytes: Vec<u8> = map.area((0, 0), (3, 2)).unwrap().map(|c| c.2).collect();
        assert_eq!(bytes, text.replace('\n', "").into_bytes());
    }

    #[test]
    fn single_cell_area() {
        let mut cells = small().area((3, 2), (3, 2)).unwrap();
        assert_eq!(cells.len(), 1);
        assert_eq!(cells.next(), Some((3, 2, b'd')));
        assert_eq!(cells.next(), None);
        assert_eq!(cells.next(), None);
    }

    #[test]
    fn area_len_counts_down() {
        let mut cells = small().area((0, 0), (3, 2)).unwrap();
        assert_eq!(cells.len(), 12);
        cells.next();
        assert_eq!(cells.len(), 11);
        assert_eq!(cells.count(), 11);
    }

    #[test]
    fn area_is_lazy() {
        // 1.6e9 x 6.4e8 cells: materialising this would need about 10^18 bytes.
        let map = Map::world().scaled(20_000_000).unwrap();
        let mut cells = map
            .area((0, 0), (map.width() - 1, map.height() - 1))
            .unwrap();
        assert_eq!(cells.len(), 1_600_000_000 * 640_000_000);
        let top_left = WORLD.as_bytes()[0];
        assert_eq!(cells.next(), Some((0, map.height() - 1, top_left)));
    }

    #[test]
    fn inverted_area_is_invalid() {
        let map = small();
        for (ll, ur) in [((2, 0), (1, 2)), ((0, 2), (3, 1))] {
            let err = map.area(ll, ur).unwrap_err();
            assert_eq!(err.kind(), AreaErrorKind::Invalid);
            assert!(!err.is_out_of_range());
        }
        // Inverted wins over off-the-map: it is wrong whatever the map.
        let err = map.area((9, 0), (-1, 0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid area: lower-left (9, 0) is right of or above upper-right (-1, 0) \
             on the 4 x 3 map"
        );
    }

    #[test]
    fn corner_off_the_map_is_out_of_range() {
        let map = Map::world();
        let err = map.area((0, 0), (80, 3)).unwrap_err();
        assert!(err.is_out_of_range());
        assert_eq!(
            err.to_string(),
            "location (80, 3) is outside the 80 x 32 map"
        );
        let err = map.area((-1, 0), (3, 3)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "location (-1, 0) is outside the 80 x 32 map"
        );
        let err = map.area((0, 0), (79, 32)).unwrap_err();
        assert_eq!(err.kind(), AreaErrorKind::OutOfRange);
        assert!(map.area((0, 0), (79, 31)).is_ok());
    }

    #[test]
    fn locate_names_the_location() {
        let map = small();
        assert_eq!(map.locate(0, 0), Ok(b'i'));
        let err = map.locate(4, 1).unwrap_err();
        assert!(err.is_out_of_range());
        assert_eq!(err.to_string(), "location (4, 1) is outside the 4 x 3 map");
    }

    #[test]
    fn scale_divides_on_lookup() {
        let map = small().scaled(3).unwrap();
        assert_eq!((map.width(), map.height(), map.scale()), (12, 9, 3));
        assert_eq!(map.cell(0, 0), Some(b'i'));
        assert_eq!(map.cell(2, 2), Some(b'i'));
        assert_eq!(map.cell(3, 0), Some(b'j'));
        assert_eq!(map.cell(0, 3), Some(b'e'));
        assert_eq!(map.cell(11, 8), Some(b'd'));
        assert_eq!(map.cell(12, 0), None);
        assert_eq!(map.cell(0, 9), None);
        let bytes: Vec<u8> = map.area((0, 7), (5, 8)).unwrap().map(|c| c.2).collect();
        assert_eq!(bytes, b"aaabbbaaabbb");
    }

    #[test]
    fn scale_composes_and_shares_storage() {
        let base = small();
        let map = base.scaled(2).unwrap().scaled(3).unwrap();
        assert_eq!((map.width(), map.height(), map.scale()), (24, 18, 6));
        assert!(Arc::ptr_eq(&map.cells, &base.cells));
    }

    #[test]
    fn scale_rejects_zero_and_overflow() {
        let map = small();
        let err = map.scaled(0).unwrap_err();
        assert!(matches!(err, MapError::BadScale { scale: 0, .. }));
        assert!(err.to_string().contains("4 x 3"), "{err}");
        assert!(map.scaled(u32::MAX).is_err());
        // 4 * 536_870_912 = 2^31 overflows i32 by one.
        assert!(map.scaled(536_870_912).is_err());
        assert!(map.scaled(536_870_911).is_ok());
        assert!(map.scaled(1 << 20).unwrap().scaled(1 << 20).is_err());
    }
}
