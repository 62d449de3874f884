//! Turns the byte pieces of generated tokens into text that is safe to emit: whole UTF-8
//! characters only, and nothing at or past a stop string, even when the stop string or a
//! character spans several tokens.

/// Output of one [`TextAssembler::push`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Text that may be emitted now.
    pub text: String,
    /// A stop string was reached; generation must end.
    pub stopped: bool,
}

/// Incremental detokenizer with stop-string matching.
#[derive(Debug)]
pub struct TextAssembler {
    stop: Vec<String>,
    /// Bytes of an unfinished UTF-8 character.
    pending: Vec<u8>,
    /// Decoded text held back because it may be the start of a stop string.
    held: String,
    stopped: bool,
    /// The stop string that ended the text.
    matched: Option<String>,
}

impl TextAssembler {
    /// An assembler ending at any of `stop`.
    pub fn new(stop: Vec<String>) -> Self {
        TextAssembler {
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: Vec::new(),
            held: String::new(),
            stopped: false,
            matched: None,
        }
    }

    /// The stop string that ended the text, once one has.
    pub fn matched_stop(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    /// Feed the bytes of the next token.
    pub fn push(&mut self, bytes: &[u8]) -> Pushed {
        if self.stopped {
            return Pushed {
                text: String::new(),
                stopped: true,
            };
        }
        self.pending.extend_from_slice(bytes);
        self.decode_pending(false);
        self.release()
    }

    /// Generation ended without a stop string: everything held back, with an unfinished character
    /// replaced by U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        self.decode_pending(true);
        std::mem::take(&mut self.held)
    }

    fn decode_pending(&mut self, at_end: bool) {
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    self.held.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // SAFETY-free: `valid` was just checked by from_utf8.
                    self.held
                        .push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            self.held.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None if at_end => {
                            self.held.push(char::REPLACEMENT_CHARACTER);
                            rest = &[];
                            break;
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
    }

    fn release(&mut self) -> Pushed {
        let first_stop = self
            .stop
            .iter()
            .filter_map(|s| Some((self.held.find(s.as_str())?, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = first_stop {
            self.matched = Some(stop.clone());
            self.held.truncate(at);
            self.stopped = true;
            return Pushed {
                text: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep = self.partial_stop_len();
        let cut = self.held.len() - keep;
        let rest = self.held.split_off(cut);
        Pushed {
            text: std::mem::replace(&mut self.held, rest),
            stopped: false,
        }
    }

    /// Length of the longest suffix of the held text that begins some stop string.
    fn partial_stop_len(&self) -> usize {
        let held = self.held.as_str();
        self.stop
            .iter()
            .flat_map(|stop| {
                (1..stop.len().min(held.len() + 1))
                    .filter(|&n| stop.is_char_boundary(n) && held.is_char_boundary(held.len() - n))
                    .filter(move |&n| held.ends_with(&stop[..n]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stop: &[&str], pieces: &[&[u8]]) -> (Vec<String>, bool) {
        let mut a = TextAssembler::new(stop.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for p in pieces {
            let pushed = a.push(p);
            out.push(pushed.text);
            if pushed.stopped {
                return (out, true);
            }
        }
        out.push(a.finish());
        (out, false)
    }

    #[test]
    fn stop_spanning_tokens_cuts_exactly() {
        let (out, stopped) = run(&["\n\nUser"], &[b"Hello", b" world\n", b"\nUs", b"er: hi"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Hello world");
        assert_eq!(out[1], " world", "the newline is held back, not emitted");
    }

    #[test]
    fn partial_match_that_fails_is_released() {
        let (out, stopped) = run(&["STOP"], &[b"ST", b"ART", b" ok"]);
        assert!(!stopped);
        assert_eq!(out, vec!["", "START", " ok", ""]);
    }

    #[test]
    fn earliest_stop_wins() {
        let (out, _) = run(&["c", "ab"], &[b"xabc"]);
        assert_eq!(out.concat(), "x");
    }

    #[test]
    fn split_utf8_is_never_emitted_broken() {
        let euro = "€".as_bytes();
        let (out, _) = run(&[], &[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]);
        assert_eq!(out, vec!["a", "", "", "€", "b", ""]);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (out, _) = run(&[], &[b"a\xff", b"b", b"\xe2\x82"]);
        assert_eq!(out.concat(), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn multibyte_stop_string_across_tokens() {
        let s = "日本".as_bytes();
        let (out, stopped) = run(&["本"], &[b"x", &s[..4], &s[4..]]);
        assert!(stopped);
        assert_eq!(out.concat(), "x日");
    }
}
