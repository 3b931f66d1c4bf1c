//! The simulator's deterministic tokenizer, shared by `/tokenize`, `usage`, chat rendering and the
//! prefix cache so that all of them agree to the token.
//!
//! # Rule
//! Text is cut left to right into pieces; each piece is one token:
//! 1. the ChatML markers `<|im_start|>` and `<|im_end|>` are one token each (special tokens);
//! 2. a newline is one token;
//! 3. a run of 2 to 16 spaces is one token, less its last space when a word follows (which joins
//!    the word);
//! 4. otherwise a piece is one optional space, then either a run of alphanumeric characters
//!    (Unicode `char::is_alphanumeric`) cut into pieces of at most 6 characters (`" hello"` is one
//!    token, `" turnbench"` is `" turnbe"` + `"nch"`), or a run of up to 3 ASCII punctuation marks
//!    other than `<` — one mark directly before a word joins the word (`.5`, `/api`); any other
//!    character is a piece of its own.
//!
//! So the suite's prose, logs, tables and code count about as real BPE tokenizers count them
//! (~4 characters a token), and each context class of the suite peaks in its band here too.
//!
//! A token's id is the 64-bit FNV-1a hash of the piece's UTF-8 bytes modulo [`VOCAB_SIZE`].
//!
//! # Prefix stability
//! If text `a` ends with a character that is neither alphanumeric nor a space (e.g. the `\n`
//! that ends every ChatML header and message), then `tokenize(a + b)` starts with `tokenize(a)`.
//! The chat template only joins parts at such boundaries, so a growing conversation's prompt
//! tokens always start with the previous prompt's tokens followed by the previous answer's tokens.

/// Token ids are in `0..VOCAB_SIZE`.
pub const VOCAB_SIZE: u32 = 100_000;

/// Longest alphanumeric piece (a leading space does not count).
pub const MAX_PIECE_CHARS: usize = 6;

/// Longest run of spaces that is one token (indentation).
pub const MAX_SPACE_RUN: usize = 16;
/// Longest run of punctuation marks that is one token.
pub const MAX_PUNCT_RUN: usize = 3;

const SPECIALS: [&str; 2] = ["<|im_start|>", "<|im_end|>"];

/// Calls `f` with every piece of `text`, in order (see the module doc for the rule).
pub fn for_each_piece<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    let bytes = text.as_bytes();
    let punct = |b: u8| b.is_ascii_punctuation() && b != b'<';
    // End of the run of alphanumeric characters from `at`, at most `MAX_PIECE_CHARS` of them.
    let alnum_end = |at: usize| {
        let mut end = at;
        for (n, ch) in text[at..].chars().enumerate() {
            if n == MAX_PIECE_CHARS || !ch.is_alphanumeric() {
                break;
            }
            end += ch.len_utf8();
        }
        end
    };
    let alnum_at = |at: usize| text[at..].chars().next().is_some_and(char::is_alphanumeric);
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if bytes[i] == b'<' {
            if let Some(s) = SPECIALS.iter().find(|s| rest.starts_with(**s)) {
                f(&rest[..s.len()]);
                i += s.len();
                continue;
            }
        }
        let start = i;
        let mut at = i;
        if bytes[at] == b' ' {
            let run = bytes[at..].iter().take(MAX_SPACE_RUN).take_while(|b| **b == b' ').count();
            if run > 1 {
                // Indentation: the spaces but the last, which joins what follows.
                let n = if at + run < text.len() && !matches!(bytes[at + run], b' ' | b'\n') { run - 1 } else { run };
                f(&text[at..at + n]);
                i = at + n;
                continue;
            }
            at += 1;
        }
        let end = if at < text.len() && alnum_at(at) {
            alnum_end(at)
        } else if at < text.len() && punct(bytes[at]) {
            let run = bytes[at..].iter().take(MAX_PUNCT_RUN).take_while(|b| punct(**b)).count();
            // One mark before a word joins it (`.5`, `/api`, `_id`).
            if run == 1 && alnum_at(at + 1) {
                alnum_end(at + 1)
            } else {
                at + run
            }
        } else if at > start {
            at
        } else {
            at + rest.chars().next().map_or(1, char::len_utf8)
        };
        f(&text[start..end]);
        i = end;
    }
}

/// The id of one piece: FNV-1a (64-bit) of its bytes, modulo [`VOCAB_SIZE`].
pub fn piece_id(piece: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in piece.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(VOCAB_SIZE)) as u32
}

/// Token ids of `text`.
pub fn tokenize(text: &str) -> Vec<u32> {
    let mut out = Vec::with_capacity(text.len() / 3 + 1);
    for_each_piece(text, |p| out.push(piece_id(p)));
    out
}

/// Number of tokens of `text` (same as `tokenize(text).len()`, without allocating).
pub fn count(text: &str) -> usize {
    let mut n = 0;
    for_each_piece(text, |_| n += 1);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<&str> {
        let mut v = Vec::new();
        for_each_piece(text, |p| v.push(p));
        v
    }

    #[test]
    fn rule() {
        assert_eq!(pieces("Hello, world!"), vec!["Hello", ",", " world", "!"]);
        assert_eq!(pieces(" turnbench  x"), vec![" turnbe", "nch", " ", " x"]);
        assert_eq!(
            pieces("<|im_start|>user\nhi<|im_end|>\n"),
            vec!["<|im_start|>", "user", "\n", "hi", "<|im_end|>", "\n"]
        );
        assert_eq!(pieces("<|im_x"), vec!["<", "|im", "_x"]);
        assert_eq!(pieces("    fn main() {\n"), vec!["   ", " fn", " main", "()", " {", "\n"]);
        assert_eq!(pieces("GET /api/v1 200 1.5ms"), vec!["GET", " /api", "/v1", " 200", " 1", ".5ms"]);
        assert_eq!(pieces("été 12345678"), vec!["été", " 123456", "78"]);
        assert_eq!(pieces(""), Vec::<&str>::new());
        assert_eq!(count("a b c"), 3);
        assert_eq!(tokenize("a b c").len(), 3);
        assert!(tokenize("some text here").iter().all(|&t| t < VOCAB_SIZE));
    }

    #[test]
    fn prefix_stable_after_newline() {
        let a = "<|im_start|>user\nWhat is a KV cache?<|im_end|>\n<|im_start|>assistant\n";
        let b = "alpha beta gamma<|im_end|>\n<|im_start|>user\nmore<|im_end|>\n";
        let ta = tokenize(a);
        let tab = tokenize(&format!("{a}{b}"));
        assert_eq!(&tab[..ta.len()], &ta[..]);
        assert_eq!(tab.len(), ta.len() + count(b));
    }
}
