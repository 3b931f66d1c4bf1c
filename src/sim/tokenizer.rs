//! The simulator's deterministic tokenizer, shared by `/tokenize`, `usage`, chat rendering and the
//! prefix cache so that all of them agree to the token.
//!
//! # Rule
//! Text is cut left to right into pieces; each piece is one token:
//! 1. the ChatML markers `<|im_start|>` and `<|im_end|>` are one token each (special tokens);
//! 2. a run of alphanumeric characters (Unicode `char::is_alphanumeric`), together with **one**
//!    optional space directly before it, is cut into pieces of at most 6 alphanumeric
//!    characters; the leading space (if any) belongs to the first piece (`" hello"` is one
//!    token, `" turnbench"` is `" turnbe"` + `"nch"`);
//! 3. every other character (punctuation, newline, a space not followed by an alphanumeric
//!    character, symbols) is one token.
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

const SPECIALS: [&str; 2] = ["<|im_start|>", "<|im_end|>"];

/// Calls `f` with every piece of `text`, in order (see the module doc for the rule).
pub fn for_each_piece<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.as_bytes()[0] == b'<' {
            if let Some(s) = SPECIALS.iter().find(|s| rest.starts_with(**s)) {
                f(&rest[..s.len()]);
                i += s.len();
                continue;
            }
        }
        let Some(c) = rest.chars().next() else { break };
        let alnum_start = if c == ' ' {
            match rest[1..].chars().next() {
                Some(n) if n.is_alphanumeric() => i + 1,
                _ => {
                    f(&rest[..1]);
                    i += 1;
                    continue;
                }
            }
        } else if c.is_alphanumeric() {
            i
        } else {
            f(&rest[..c.len_utf8()]);
            i += c.len_utf8();
            continue;
        };
        let mut piece_start = i;
        let mut n = 0;
        let mut pos = alnum_start;
        for ch in text[alnum_start..].chars() {
            if !ch.is_alphanumeric() {
                break;
            }
            if n == MAX_PIECE_CHARS {
                f(&text[piece_start..pos]);
                piece_start = pos;
                n = 0;
            }
            n += 1;
            pos += ch.len_utf8();
        }
        f(&text[piece_start..pos]);
        i = pos;
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
        assert_eq!(pieces("<|im_x"), vec!["<", "|", "im", "_", "x"]);
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
