//! Terminal drawing of an area as its cells stream in.
//!
//! [`RenderMode::Live`] reserves the area's rows and then puts each cell in place with ANSI
//! cursor movement, so the map fills in as the server streams it. [`RenderMode::Plain`]
//! collects the cells and prints the finished text at the end, for pipes and files.
//! [`RenderMode::None`] draws nothing. [`summary`] formats the closing statistics line.
//!
//! Coordinates given to [`Renderer::cell`] are relative to the area and Cartesian like the map:
//! `(0, 0)` is the area's bottom-left cell, so the caller subtracts the area's lower-left corner.

use std::{
    fmt,
    io::{self, IsTerminal, Write},
    time::Duration,
};

/// The largest area drawn; beyond this the renderer draws nothing rather than fill memory
/// (Plain keeps a byte per cell) or a terminal with a picture nobody can read.
pub const MAX_DRAWN_CELLS: u64 = 4 * 1024 * 1024;

/// Shown for a cell whose image is empty or not printable ASCII.
const UNKNOWN: u8 = b'?';

/// SGR for land in colour mode: green foreground.
const LAND: &[u8] = b"\x1b[32m";

/// SGR for sea in colour mode: blue background.
const SEA: &[u8] = b"\x1b[44m";

/// SGR that resets colours.
const RESET: &[u8] = b"\x1b[0m";

/// How an area is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenderMode {
    /// Cells appear in place as they arrive (needs an ANSI terminal).
    Live,
    /// Draw nothing.
    None,
    /// Collect the cells and print the whole area as text at the end.
    Plain,
}

impl RenderMode {
    /// Live when stdout is a terminal that understands ANSI, Plain otherwise.
    pub fn auto() -> Self {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        if io::stdout().is_terminal() && !dumb {
            Self::Live
        } else {
            Self::Plain
        }
    }
}

/// Draws one area's cells onto a writer in the chosen [`RenderMode`].
pub struct Renderer<W: Write> {
    mode: RenderMode,
    width: u32,
    height: u32,
    out: W,
    colour: bool,
    /// Plain mode: the area in reading order, one byte per cell.
    grid: Vec<u8>,
    /// Live mode: whether the rows have been reserved yet.
    started: bool,
    /// Live mode: the cursor's row relative to the area's top row (`height` is the line below
    /// the area) and its column, as far as we moved it.
    cursor: (u32, u32),
    /// Live mode: one cell's bytes, so each cell is a single write.
    scratch: Vec<u8>,
}

impl<W: Write> Renderer<W> {
    /// A renderer for a `width x height` area writing to `out`; nothing is written yet.
    ///
    /// An area larger than [`MAX_DRAWN_CELLS`] or with a zero side is drawn as
    /// [`RenderMode::None`]; [`Renderer::mode`] tells which mode is in effect.
    pub fn new(mode: RenderMode, width: u32, height: u32, out: W) -> Self {
        let cells = u64::from(width) * u64::from(height);
        let mode = if cells == 0 || cells > MAX_DRAWN_CELLS {
            RenderMode::None
        } else {
            mode
        };
        let grid = match mode {
            // Bounded by MAX_DRAWN_CELLS above, so the cast and the allocation are small.
            RenderMode::Plain => vec![b' '; cells as usize],
            RenderMode::Live | RenderMode::None => Vec::new(),
        };
        Self {
            mode,
            width,
            height,
            out,
            colour: false,
            grid,
            started: false,
            cursor: (height, 0),
            scratch: Vec::with_capacity(32),
        }
    }

    /// Colours land green and sea blue in Live mode (off by default; Plain is never coloured).
    pub fn with_colour(mut self, colour: bool) -> Self {
        self.colour = colour;
        self
    }

    /// The mode in effect, after the size check in [`Renderer::new`].
    pub fn mode(&self) -> RenderMode {
        self.mode
    }

    /// Draws the cell at `(x, y)` of the area from the first byte of `img`.
    ///
    /// Cells outside the area are ignored: a server's reply must never move the cursor out of
    /// the rows reserved for it.
    ///
    /// # Errors
    ///
    /// A failed write or flush (Live mode).
    pub fn cell(&mut self, x: i32, y: i32, img: &[u8]) -> io::Result<()> {
        let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y)) else {
            return Ok(());
        };
        if x >= self.width || y >= self.height {
            return Ok(());
        }
        let byte = match img.first() {
            Some(&b) if (b' '..=b'~').contains(&b) => b,
            _ => UNKNOWN,
        };
        // The area's top row is drawn first: row 0 on screen is y = height - 1.
        let row = self.height - 1 - y;
        match self.mode {
            RenderMode::None => Ok(()),
            RenderMode::Plain => {
                let index = row as usize * self.width as usize + x as usize;
                self.grid[index] = byte;
                Ok(())
            }
            RenderMode::Live => self.draw(row, x, byte),
        }
    }

    /// Ends the drawing and hands back the writer: Plain prints the area, Live puts the cursor
    /// on the line below the area.
    ///
    /// # Errors
    ///
    /// A failed write or flush.
    pub fn finish(mut self) -> io::Result<W> {
        match self.mode {
            RenderMode::None => {}
            RenderMode::Plain => {
                for line in self.grid.chunks(self.width as usize) {
                    self.out.write_all(line)?;
                    self.out.write_all(b"\n")?;
                }
                self.out.flush()?;
            }
            RenderMode::Live => {
                // An area whose stream never sent a cell still gets its (blank) rows, so what
                // follows is printed below where the map would be.
                self.reserve()?;
                let down = self.height - self.cursor.0;
                if down > 0 {
                    write!(self.out, "\x1b[{down}B")?;
                }
                self.out.write_all(b"\r")?;
                self.out.flush()?;
            }
        }
        Ok(self.out)
    }

    /// Live: prints `height` newlines so the area has its rows, scrolling if needed.
    fn reserve(&mut self) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        for _ in 0..self.height {
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Live: moves to `(row, column)` with relative vertical and absolute horizontal moves
    /// (we never know the absolute screen row), prints the byte, flushes.
    fn draw(&mut self, row: u32, column: u32, byte: u8) -> io::Result<()> {
        self.reserve()?;
        let buf = &mut self.scratch;
        buf.clear();
        let (at_row, at_column) = self.cursor;
        if row < at_row {
            write!(buf, "\x1b[{}A", at_row - row)?;
        } else if row > at_row {
            write!(buf, "\x1b[{}B", row - at_row)?;
        }
        // Consecutive cells in a row need no move: printing advanced the cursor already.
        if row != at_row || column != at_column {
            write!(buf, "\x1b[{}G", column + 1)?;
        }
        if self.colour {
            buf.extend_from_slice(if byte == b' ' { SEA } else { LAND });
            buf.push(byte);
            buf.extend_from_slice(RESET);
        } else {
            buf.push(byte);
        }
        self.cursor = (row, column + 1);
        self.out.write_all(buf)?;
        self.out.flush()
    }
}

impl<W: Write> fmt::Debug for Renderer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderer")
            .field("mode", &self.mode)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("colour", &self.colour)
            .finish_non_exhaustive()
    }
}

/// The closing line: `cells: N, bytes: N, elapsed: 1.234 s, cells/s: N`.
///
/// The rate is rounded to a whole number; it is `-` when no time elapsed.
pub fn summary(cells: u64, bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        format!("{:.0}", cells as f64 / seconds)
    } else {
        "-".to_owned()
    };
    format!("cells: {cells}, bytes: {bytes}, elapsed: {seconds:.3} s, cells/s: {rate}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_prints_the_area_top_row_first() {
        let mut r = Renderer::new(RenderMode::Plain, 3, 2, Vec::new());
        // Out of order on purpose: placement is by coordinate, not by arrival.
        r.cell(2, 0, b"c").unwrap();
        r.cell(0, 1, b"#").unwrap();
        r.cell(1, 1, b" ").unwrap();
        r.cell(2, 1, b"#").unwrap();
        r.cell(0, 0, b"a").unwrap();
        r.cell(1, 0, b"b").unwrap();
        assert_eq!(text(r.finish().unwrap()), "# #\nabc\n");
    }

    #[test]
    fn plain_marks_empty_and_unprintable_images_and_leaves_gaps_blank() {
        let mut r = Renderer::new(RenderMode::Plain, 4, 1, Vec::new());
        r.cell(0, 0, b"").unwrap();
        r.cell(1, 0, b"\x1b[2J").unwrap();
        r.cell(2, 0, "é".as_bytes()).unwrap();
        assert_eq!(text(r.finish().unwrap()), "??? \n");
    }

    #[test]
    fn plain_uses_only_the_first_byte() {
        let mut r = Renderer::new(RenderMode::Plain, 1, 1, Vec::new());
        r.cell(0, 0, b"#abc").unwrap();
        assert_eq!(text(r.finish().unwrap()), "#\n");
    }

    #[test]
    fn cells_outside_the_area_are_ignored() {
        for mode in [RenderMode::Plain, RenderMode::Live] {
            let mut r = Renderer::new(mode, 2, 2, Vec::new());
            for (x, y) in [(-1, 0), (0, -1), (2, 0), (0, 2), (i32::MIN, i32::MAX)] {
                r.cell(x, y, b"#").unwrap();
            }
            let out = text(r.finish().unwrap());
            assert!(!out.contains('#'), "{mode:?}: {out:?}");
        }
    }

    #[test]
    fn live_reserves_rows_then_moves_per_cell() {
        let mut r = Renderer::new(RenderMode::Live, 3, 2, Vec::new());
        // Top row (y = 1) left to right, then the bottom row: reading order, as streamed.
        for (x, y, b) in [
            (0, 1, b"#"),
            (1, 1, b" "),
            (2, 1, b"#"),
            (0, 0, b"a"),
            (2, 0, b"c"),
        ] {
            r.cell(x, y, b).unwrap();
        }
        let out = text(r.finish().unwrap());
        assert_eq!(
            out,
            concat!(
                "\n\n",            // reserve two rows; the cursor is now below them
                "\x1b[2A\x1b[1G#", // up to the top row, column 1
                " #",              // the next two cells follow on: no movement needed
                "\x1b[1B\x1b[1Ga", // down a row, back to column 1
                "\x1b[3Gc",        // skip (1, 0): jump to column 3
                "\x1b[1B\r",       // below the area at the end
            )
        );
    }

    #[test]
    fn live_moves_up_and_down_for_out_of_order_cells() {
        let mut r = Renderer::new(RenderMode::Live, 2, 3, Vec::new());
        r.cell(1, 0, b"x").unwrap(); // bottom row: one line up from below the area
        r.cell(0, 2, b"y").unwrap(); // top row: two more up
        r.cell(0, 1, b"z").unwrap(); // middle: one down
        let out = text(r.finish().unwrap());
        assert_eq!(
            out,
            "\n\n\n\x1b[1A\x1b[2Gx\x1b[2A\x1b[1Gy\x1b[1B\x1b[1Gz\x1b[2B\r"
        );
    }

    #[test]
    fn live_colours_land_and_sea() {
        let mut r = Renderer::new(RenderMode::Live, 2, 1, Vec::new()).with_colour(true);
        r.cell(0, 0, b"#").unwrap();
        r.cell(1, 0, b" ").unwrap();
        let out = text(r.finish().unwrap());
        assert_eq!(
            out,
            "\n\x1b[1A\x1b[1G\x1b[32m#\x1b[0m\x1b[44m \x1b[0m\x1b[1B\r"
        );
    }

    #[test]
    fn live_with_no_cells_still_leaves_room() {
        let r = Renderer::new(RenderMode::Live, 2, 2, Vec::new());
        assert_eq!(text(r.finish().unwrap()), "\n\n\r");
    }

    #[test]
    fn plain_is_never_coloured() {
        let mut r = Renderer::new(RenderMode::Plain, 1, 1, Vec::new()).with_colour(true);
        r.cell(0, 0, b"#").unwrap();
        assert_eq!(text(r.finish().unwrap()), "#\n");
    }

    #[test]
    fn none_draws_nothing() {
        let mut r = Renderer::new(RenderMode::None, 2, 2, Vec::new());
        r.cell(0, 0, b"#").unwrap();
        assert!(r.finish().unwrap().is_empty());
    }

    #[test]
    fn huge_or_empty_areas_fall_back_to_none() {
        let r = Renderer::new(RenderMode::Plain, 1_000_000, 1_000_000, Vec::new());
        assert_eq!(r.mode(), RenderMode::None);
        let r = Renderer::new(RenderMode::Live, 0, 5, Vec::new());
        assert_eq!(r.mode(), RenderMode::None);
        assert!(r.finish().unwrap().is_empty());
        let r = Renderer::new(RenderMode::Live, 80, 32, Vec::new());
        assert_eq!(r.mode(), RenderMode::Live);
    }

    #[test]
    fn summary_line() {
        assert_eq!(
            summary(2560, 2560, Duration::from_millis(1234)),
            "cells: 2560, bytes: 2560, elapsed: 1.234 s, cells/s: 2075"
        );
        assert_eq!(
            summary(10, 12, Duration::ZERO),
            "cells: 10, bytes: 12, elapsed: 0.000 s, cells/s: -"
        );
    }
}
