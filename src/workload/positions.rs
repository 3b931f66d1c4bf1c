//! Where in a JSON file a value sits: `serde_path_to_error` names a path
//! (`conversations[3].turns[2].user`), and errors found after parsing name one too; these turn a
//! path into a byte offset and that into line:column, so every data error points at its place.

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Byte offset of the value at `path` (written like `conversations[3].turns[2].user`; `.` or
/// empty for the root) in the JSON `text`, or `None` when the path does not exist or the text is
/// not valid JSON.
///
/// A minimal tokenizer: it only needs to step over strings (with escapes), objects, arrays and
/// scalars while building path strings in the same form `serde_path_to_error` prints them.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let target = if path == "." { "" } else { path };
    let mut walker = Walker { bytes: text.as_bytes(), pos: 0, target, found: None };
    let _ = walker.value(&mut String::new());
    walker.found
}

struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
    target: &'a str,
    found: Option<usize>,
}

impl Walker<'_> {
    fn ws(&mut self) {
        while self.pos < self.bytes.len() && matches!(self.bytes[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8) -> Result<(), ()> {
        self.ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    /// Walks one value whose path is `path`; stops early once the target is found.
    fn value(&mut self, path: &mut String) -> Result<(), ()> {
        self.ws();
        if path == self.target {
            self.found = Some(self.pos);
            return Err(()); // done: unwind without walking the rest
        }
        // Only descend where the target can be.
        let descend = self.target.starts_with(path.as_str());
        match self.peek().ok_or(())? {
            b'{' => {
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.expect(b':')?;
                    let len = path.len();
                    if descend {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(&key);
                        self.value(path)?;
                        path.truncate(len);
                    } else {
                        self.skip()?;
                    }
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            b'[' => {
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(());
                }
                let mut index = 0;
                loop {
                    let len = path.len();
                    if descend {
                        path.push_str(&format!("[{index}]"));
                        self.value(path)?;
                        path.truncate(len);
                    } else {
                        self.skip()?;
                    }
                    index += 1;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => self.scalar(),
        }
    }

    /// Skips one value without tracking paths.
    fn skip(&mut self) -> Result<(), ()> {
        self.ws();
        let mut depth = 0usize;
        loop {
            match self.peek().ok_or(())? {
                b'"' => {
                    self.string()?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1).ok_or(())?;
                    self.pos += 1;
                }
                b',' if depth == 0 => return Ok(()),
                _ => self.pos += 1,
            }
            if depth == 0 {
                self.ws();
                if matches!(self.peek(), Some(b',' | b'}' | b']') | None) {
                    return Ok(());
                }
            }
        }
    }

    fn scalar(&mut self) -> Result<(), ()> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            Err(())
        } else {
            Ok(())
        }
    }

    /// Reads a string starting at `"`, returning its content (escapes decoded well enough for keys).
    fn string(&mut self) -> Result<String, ()> {
        if self.peek() != Some(b'"') {
            return Err(());
        }
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                }
                b'"' => {
                    let raw = std::str::from_utf8(&self.bytes[start..self.pos - 1]).map_err(|_| ())?;
                    if !escaped {
                        return Ok(raw.to_string());
                    }
                    return serde_json::from_str::<String>(&format!("\"{raw}\"")).map_err(|_| ());
                }
                _ => {}
            }
        }
        Err(())
    }
}
