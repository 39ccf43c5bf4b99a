//! Redis glob patterns, as KEYS, SCAN MATCH and the other pattern-taking commands use them.
//!
//! Clients write patterns for Redis, so a pattern must select exactly the keys Redis would
//! select. [`glob_match`] reproduces Redis's `stringmatchlen` (`util.c`), quirks included, for
//! any bytes; [`key_matches`] adds the one special case KEYS and SCAN put in front of it; and
//! [`literal_prefix`] gives the part of a pattern every match starts with, so that a sorted key
//! space can be range-scanned instead of walked in full.
//!
//! The syntax, all case-sensitive and byte-oriented:
//!
//! - `*` matches any run of bytes, `?` exactly one byte;
//! - `[abc]` one byte from the set, `[^abc]` one byte not in it, `[a-z]` a range (the ends may
//!   come in either order, `[z-a]` is `[a-z]`); inside brackets `\x` stands for the byte `x`;
//! - `\x` outside brackets matches `x` itself (a trailing `\` matches a `\`);
//! - anything else matches itself.
//!
//! Redis's corner cases are kept: an unclosed `[` takes the rest of the pattern as its set (so
//! `[abc` matches `a`, and `[` alone matches nothing); `[]` matches nothing and `[^]` any byte;
//! `-` right before the closing `]` is a range ending at `]` (`[a-]` is `[]-a]`); the empty
//! subject matches only the empty pattern (even `*` does not match it; see [`key_matches`]).
//!
//! Matching runs in O(pattern × subject) time at worst, with no recursion: on a mismatch only the
//! most recent `*` is retried further along the subject, which gives the same answers as full
//! backtracking because every other token matches exactly one byte. Redis's recursive matcher
//! also gives up (no match) once a match attempt reaches a 1001st `*` with pattern left after it,
//! as protection against abusive patterns; that cutoff is reproduced, so a pattern with that many
//! stars matches nothing here either.

/// Redis's `stringmatchlen_impl` stops at a nesting (star) depth above this.
const MAX_STAR_NESTING: usize = 1000;

/// Whether `subject` matches the Redis glob `pattern`, exactly as Redis's `stringmatchlen` decides
/// (case-sensitive).
///
/// One difference from C Redis, where it cannot be avoided: ranges compare bytes as unsigned
/// (`[a-\xff]` holds every byte from `a` up). Redis compares C `char`s, which are signed on x86 and
/// unsigned on ARM, so there the answer for bytes above 0x7f depends on the machine.
///
/// As in `stringmatchlen`, an empty subject matches only an empty pattern, so
/// `glob_match(b"*", b"")` is false; KEYS and SCAN work around that with [`key_matches`].
pub fn glob_match(pattern: &[u8], subject: &[u8]) -> bool {
    // Redis's loop never runs for an empty subject, not even to skip a lone `*`.
    if subject.is_empty() {
        return pattern.is_empty();
    }
    let (mut p, mut s) = (0, 0);
    let mut stars = 0;
    // Where to resume after the latest `*`: the pattern after it, and the subject position it was
    // last tried at.
    let mut retry: Option<(usize, usize)> = None;
    while let Some(&byte) = subject.get(s) {
        match pattern.get(p) {
            Some(b'*') => {
                while pattern.get(p + 1) == Some(&b'*') {
                    p += 1;
                }
                p += 1;
                if p == pattern.len() {
                    // A trailing star matches whatever is left.
                    return true;
                }
                stars += 1;
                if stars > MAX_STAR_NESTING {
                    return false;
                }
                retry = Some((p, s));
                continue;
            }
            Some(_) => {
                let (matched, next) = match_token(pattern, p, byte);
                if matched {
                    p = next;
                    s += 1;
                    continue;
                }
            }
            None => {}
        }
        // Mismatch, or pattern used up before the subject: let the latest star take one more byte.
        let Some((after_star, tried_at)) = retry else {
            return false;
        };
        p = after_star;
        s = tried_at + 1;
        retry = Some((after_star, s));
    }
    // The subject is used up: only stars may remain.
    pattern
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|&b| b == b'*')
}

/// Whether `key` is selected by the pattern of a KEYS or SCAN MATCH: [`glob_match`], except that
/// the pattern `*` selects every key, the empty key included, because Redis skips matching
/// altogether for it.
pub fn key_matches(pattern: &[u8], key: &[u8]) -> bool {
    pattern == b"*" || glob_match(pattern, key)
}

/// The longest prefix of `pattern` free of the special bytes `*`, `?`, `[` and `\`.
///
/// Every subject that `pattern` matches (by [`glob_match`] or [`key_matches`], the pattern `*`
/// included) starts with this prefix, so only keys in the range starting at it need testing. If
/// the prefix is the whole pattern, the pattern matches exactly one subject: itself. Escapes end
/// the prefix rather than being decoded, so `a\*b` gives `a`, which is still correct, only less
/// selective.
pub fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    pattern.split_at(end).0
}

/// Matches the one-byte token (anything but `*`) at `pattern[p]` against `byte`. Returns whether
/// it matched and where the next token starts.
fn match_token(pattern: &[u8], p: usize, byte: u8) -> (bool, usize) {
    match pattern.get(p) {
        Some(b'?') => (true, p + 1),
        Some(b'[') => match_class(pattern, p + 1, byte),
        Some(b'\\') if p + 1 < pattern.len() => (pattern.get(p + 1) == Some(&byte), p + 2),
        Some(&literal) => (literal == byte, p + 1),
        None => (false, p),
    }
}

/// Matches the bracket class whose body starts at `pattern[i]` (just after the `[`), following
/// Redis's loop step for step. Returns whether `byte` matched and where the next token starts.
fn match_class(pattern: &[u8], mut i: usize, byte: u8) -> (bool, usize) {
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    loop {
        let left = pattern.len().saturating_sub(i);
        let current = pattern.get(i).copied();
        if left >= 2 && current == Some(b'\\') {
            i += 1;
            matched |= pattern.get(i) == Some(&byte);
        } else if current == Some(b']') {
            break;
        } else if left == 0 {
            // Unclosed: the class took the rest of the pattern.
            return (matched != negate, pattern.len());
        } else if left >= 3 && pattern.get(i + 1) == Some(&b'-') {
            let (a, b) = (
                current.unwrap_or(0),
                pattern.get(i + 2).copied().unwrap_or(0),
            );
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            matched |= (low..=high).contains(&byte);
            i += 2;
        } else {
            matched |= current == Some(byte);
        }
        i += 1;
    }
    (matched != negate, i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A transliteration of Redis's recursive `stringmatchlen_impl` (nocase off), pointer
    /// arithmetic turned into indices. Reading one past the end yields 0, the C string's NUL.
    fn redis_reference(pattern: &[u8], subject: &[u8]) -> bool {
        let mut skip_longer = false;
        reference_impl(pattern, 0, subject, 0, &mut skip_longer, 0)
    }

    fn reference_impl(
        pat: &[u8],
        mut p: usize,
        sub: &[u8],
        mut s: usize,
        skip_longer: &mut bool,
        nesting: usize,
    ) -> bool {
        if nesting > 1000 {
            return false;
        }
        let at = |i: usize| pat.get(i).copied().unwrap_or(0);
        while p < pat.len() && s < sub.len() {
            match pat[p] {
                b'*' => {
                    while p < pat.len() && at(p + 1) == b'*' {
                        p += 1;
                    }
                    if pat.len() - p == 1 {
                        return true;
                    }
                    while s < sub.len() {
                        if reference_impl(pat, p + 1, sub, s, skip_longer, nesting + 1) {
                            return true;
                        }
                        if *skip_longer {
                            return false;
                        }
                        s += 1;
                    }
                    *skip_longer = true;
                    return false;
                }
                b'?' => s += 1,
                b'[' => {
                    p += 1;
                    let not = at(p) == b'^';
                    if not {
                        p += 1;
                    }
                    let mut matched = false;
                    loop {
                        let len = pat.len() - p;
                        if at(p) == b'\\' && len >= 2 {
                            p += 1;
                            if at(p) == sub[s] {
                                matched = true;
                            }
                        } else if at(p) == b']' {
                            break;
                        } else if len == 0 {
                            p -= 1;
                            break;
                        } else if len >= 3 && at(p + 1) == b'-' {
                            let (mut start, mut end) = (at(p), at(p + 2));
                            if start > end {
                                std::mem::swap(&mut start, &mut end);
                            }
                            p += 2;
                            if sub[s] >= start && sub[s] <= end {
                                matched = true;
                            }
                        } else if at(p) == sub[s] {
                            matched = true;
                        }
                        p += 1;
                    }
                    if not {
                        matched = !matched;
                    }
                    if !matched {
                        return false;
                    }
                    s += 1;
                }
                c => {
                    let c = if c == b'\\' && pat.len() - p >= 2 {
                        p += 1;
                        at(p)
                    } else {
                        c
                    };
                    if c != sub[s] {
                        return false;
                    }
                    s += 1;
                }
            }
            p += 1;
            if s == sub.len() {
                while at(p) == b'*' {
                    p += 1;
                }
                break;
            }
        }
        p == pat.len() && s == sub.len()
    }

    #[test]
    fn redis_cases() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            // Empty pattern and subject.
            (b"", b"", true),
            (b"", b"a", false),
            (b"a", b"", false),
            (b"*", b"", false),
            (b"**", b"", false),
            (b"?", b"", false),
            // Literals.
            (b"hello", b"hello", true),
            (b"hello", b"hell", false),
            (b"hello", b"helloo", false),
            (b"Hello", b"hello", false),
            (b"\x00\xff", b"\x00\xff", true),
            // Stars.
            (b"*", b"anything", true),
            (b"*", b"\x00", true),
            (b"a*", b"a", true),
            (b"a**", b"a", true),
            (b"a*", b"abc", true),
            (b"a*", b"bac", false),
            (b"*b", b"ab", true),
            (b"*b", b"ba", false),
            (b"h*llo", b"hllo", true),
            (b"h*llo", b"heeeello", true),
            (b"h*llo", b"heeeellox", false),
            (b"*foo*", b"foo", true),
            (b"*foo*", b"xfooy", true),
            (b"*foo*", b"fo", false),
            (b"*a*b*", b"xaxbx", true),
            (b"*a*b*", b"xbxax", false),
            (b"user:*:name", b"user:42:name", true),
            (b"user:*:name", b"user:42:names", false),
            (b"a*b*c", b"abbbbbc", true),
            (b"*?", b"a", true),
            (b"*??", b"a", false),
            // Question marks.
            (b"h?llo", b"hello", true),
            (b"h?llo", b"hallo", true),
            (b"h?llo", b"hllo", false),
            (b"a?", b"abc", false),
            // Classes.
            (b"h[ae]llo", b"hello", true),
            (b"h[ae]llo", b"hallo", true),
            (b"h[ae]llo", b"hillo", false),
            (b"h[^e]llo", b"hallo", true),
            (b"h[^e]llo", b"hello", false),
            (b"h[a-b]llo", b"hbllo", true),
            (b"h[a-b]llo", b"hcllo", false),
            (b"h[b-a]llo", b"hallo", true),
            (b"[z-a]", b"m", true),
            (b"[0-9][0-9]", b"42", true),
            (b"[^0-9]", b"4", false),
            (b"[a-cx]", b"x", true),
            (b"[a-cx]", b"d", false),
            (b"[\x80-\xff]", b"\x90", true),
            (b"[a-\xff]", b"b", true),
            (b"[a-\xff]", b"A", false),
            (b"[*?]", b"*", true),
            (b"[*?]", b"a", false),
            // Escapes, inside and outside classes.
            (b"h\\*llo", b"h*llo", true),
            (b"h\\*llo", b"hello", false),
            (b"\\?", b"?", true),
            (b"\\?", b"a", false),
            (b"\\[a]", b"[a]", true),
            (b"\\a", b"a", true),
            (b"a\\", b"a\\", true),
            (b"\\", b"\\", true),
            (b"\\", b"", false),
            (b"*\\*", b"abc*", true),
            (b"*\\*", b"abc", false),
            (b"[\\]]", b"]", true),
            (b"[\\-]", b"-", true),
            (b"[a\\-z]", b"-", true),
            (b"[a\\-z]", b"b", false),
            (b"[\\^a]", b"^", true),
            (b"[a\\]", b"]", true),
            (b"[a\\]", b"\\", false),
            // Odd brackets, as Redis reads them.
            (b"[abc", b"a", true),
            (b"[abc", b"d", false),
            (b"[abc", b"ab", false),
            (b"[", b"[", false),
            (b"ab[", b"ab[", false),
            (b"[^", b"x", true),
            (b"[]", b"]", false),
            (b"[]]", b"]", false),
            (b"[]a]", b"a]", false),
            (b"[^]", b"x", true),
            (b"[^]", b"", false),
            (b"[a-]", b"]", true),
            (b"[a-]", b"_", true),
            (b"[a-]", b"-", false),
            (b"[a-]", b"b", false),
            (b"[-a]", b"-", true),
            (b"]", b"]", true),
            (b"^", b"^", true),
        ];
        for &(pattern, subject, expected) in cases {
            let shown = (
                pattern.escape_ascii().to_string(),
                subject.escape_ascii().to_string(),
            );
            assert_eq!(glob_match(pattern, subject), expected, "{shown:?}");
            assert_eq!(
                redis_reference(pattern, subject),
                expected,
                "reference {shown:?}"
            );
        }
    }

    #[test]
    fn abusive_patterns() {
        // keyspace.tcl, "Regression for pattern matching long nested loops".
        let subject = [b'a'; 40];
        assert!(!glob_match(
            b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
            &subject
        ));
        // keyspace.tcl, "Regression for pattern matching very long nested loops": Redis's nesting
        // guard gives up, although the pattern would otherwise match.
        let pattern = b"*?".repeat(50_000);
        assert!(!glob_match(&pattern, &[b'a'; 50_000]));
        // The cutoff is exactly at the 1001st star with pattern after it.
        let subject = [b'a'; 1001];
        assert!(glob_match(&b"*a".repeat(1000), &subject[..1000]));
        assert!(!glob_match(&b"*a".repeat(1001), &subject));
        assert!(redis_reference(&b"*a".repeat(1000), &subject[..1000]));
        assert!(!redis_reference(&b"*a".repeat(1001), &subject));
        // A trailing 1001st star still matches.
        let mut pattern = b"*a".repeat(1000);
        pattern.push(b'*');
        assert!(glob_match(&pattern, &subject));
        assert!(redis_reference(&pattern, &subject));
        // Long inputs stay fast (quadratic at worst, not exponential).
        let pattern = [b"*a".repeat(500), b"b".to_vec()].concat();
        assert!(!glob_match(&pattern, &[b'a'; 10_000]));
    }

    #[test]
    fn keys_and_scan_special_case() {
        assert!(key_matches(b"*", b""));
        assert!(key_matches(b"*", b"abc"));
        assert!(!key_matches(b"**", b""));
        assert!(!key_matches(b"?", b""));
        assert!(key_matches(b"", b""));
        assert!(key_matches(b"a*", b"abc"));
    }

    #[test]
    fn literal_prefixes() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"abc", b"abc"),
            (b"user:*", b"user:"),
            (b"a?b", b"a"),
            (b"[ab]c", b""),
            (b"ab[c]", b"ab"),
            (b"a\\*b", b"a"),
            (b"*", b""),
            (b"a]b^-", b"a]b^-"),
        ];
        for &(pattern, prefix) in cases {
            assert_eq!(
                literal_prefix(pattern),
                prefix,
                "{:?}",
                pattern.escape_ascii().to_string()
            );
        }
    }

    /// Bytes that exercise every branch: all the specials, a few literals, NUL and a high byte.
    fn pattern_byte() -> impl Strategy<Value = u8> {
        prop::sample::select(b"*?[]^-\\ab\x00\xff".to_vec())
    }

    fn subject_byte() -> impl Strategy<Value = u8> {
        prop::sample::select(b"ab]^-\\*?[\x00\xff".to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn matches_the_redis_reference(
            pattern in prop::collection::vec(pattern_byte(), 0..12),
            subject in prop::collection::vec(subject_byte(), 0..12),
        ) {
            prop_assert_eq!(glob_match(&pattern, &subject), redis_reference(&pattern, &subject));
        }

        #[test]
        fn matches_the_reference_on_likely_matches(
            subject in prop::collection::vec(prop::sample::select(b"ab".to_vec()), 0..16),
            edits in prop::collection::vec((any::<usize>(), pattern_byte()), 0..6),
        ) {
            // Patterns derived from the subject, so that a good share of cases match.
            let mut pattern = subject.clone();
            for (at, byte) in edits {
                let at = at % (pattern.len() + 1);
                if at < pattern.len() && byte != b'*' {
                    pattern[at] = byte;
                } else {
                    pattern.insert(at, byte);
                }
            }
            let expected = redis_reference(&pattern, &subject);
            prop_assert_eq!(glob_match(&pattern, &subject), expected);
            if expected {
                prop_assert!(subject.starts_with(literal_prefix(&pattern)));
            }
        }

        #[test]
        fn literal_prefix_is_a_prefix_of_every_match(
            pattern in prop::collection::vec(pattern_byte(), 0..10),
            subject in prop::collection::vec(subject_byte(), 0..10),
        ) {
            if key_matches(&pattern, &subject) {
                prop_assert!(subject.starts_with(literal_prefix(&pattern)));
            }
            if literal_prefix(&pattern) == pattern.as_slice() {
                prop_assert_eq!(glob_match(&pattern, &subject), pattern == subject);
            }
        }
    }
}
