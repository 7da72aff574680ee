//! The built-in secret detectors of `redact` rules, each with a bounded longest match.

/// Built-in secret / personal-data detectors for `redact`.
///
/// The patterns favour precision over recall (they ship in the default pack, which must leave
/// ordinary code and prose alone), use ASCII word boundaries (`(?-u:\b)`) so DFAs can run
/// them on any text, and match only ASCII, so a match's length in characters equals its length
/// in bytes; [`Detector::max_len`] bounds both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    Email,
    AwsAccessKey,
    GithubToken,
    OpenaiKey,
    PrivateKey,
    Jwt,
}

/// local@domain.tld: a 1–64 character local part starting with a letter or digit, 1–6 DNS
/// labels, a 2–24 letter top-level domain.
pub(super) const EMAIL: &str = r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,6}[A-Za-z]{2,24}(?-u:\b)";
/// AWS access key ids (long-term `AKIA`, temporary `ASIA`, and the rarer `ABIA`/`ACCA`).
pub(super) const AWS_ACCESS_KEY: &str = r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)";
/// Classic (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`) and fine-grained (`github_pat_`) tokens.
pub(super) const GITHUB_TOKEN: &str =
    r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{82})(?-u:\b)";
/// `sk-` keys: prefixed project/service-account/admin keys, keys carrying OpenAI's `T3BlbkFJ`
/// marker, and unprefixed alphanumeric keys of 32 or more characters (as OpenAI-compatible
/// servers issue). Kebab-case words after `sk-` match none of these.
pub(super) const OPENAI_KEY: &str = r"(?-u:\b)sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32,256}|[A-Za-z0-9_-]{1,128}T3BlbkFJ[A-Za-z0-9_-]{1,128}|[A-Za-z0-9]{32,128}(?-u:\b))";
/// A whole PEM (or PGP) private key block: header, a body of base64 and header lines (also
/// with `\n` escapes, as in source code strings) of at most 4096 characters, and the footer.
/// The body must hold key material: a run of 16 base64 characters within its first 272
/// (after `Proc-Type:`/`DEK-Info:`/`Version:` lines), so an empty BEGIN/END pair (a test
/// fixture, a parser's format string) is not a key. 4096 covers RSA-4096 keys in PKCS#1,
/// PKCS#8 and OpenSSH form (about 3.4k characters) even indented or with escaped newlines; a
/// larger bound makes the regex engine's lazy DFA overflow its cache and fall back to a ten
/// times slower search on every key.
pub(super) const PRIVATE_KEY: &str = r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=:,.\\ \t\r\n-]{0,256}?[A-Za-z0-9+/=]{16}[A-Za-z0-9+/=:,.\\ \t\r\n-]{0,3824}?-----END (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----";
/// A signed JWT: base64url header and payload that both start with `{"` (`eyJ`), and a
/// signature of 16 to 1536 characters.
pub(super) const JWT: &str =
    r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,512}\.eyJ[A-Za-z0-9_-]{5,4096}\.[A-Za-z0-9_-]{16,1536}";

impl Detector {
    pub const ALL: [Detector; 6] = [
        Detector::Email,
        Detector::AwsAccessKey,
        Detector::GithubToken,
        Detector::OpenaiKey,
        Detector::PrivateKey,
        Detector::Jwt,
    ];

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::GithubToken => "github_token",
            Detector::OpenaiKey => "openai_key",
            Detector::PrivateKey => "private_key",
            Detector::Jwt => "jwt",
        }
    }

    pub fn parse(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The detector's regex, in `regex` crate syntax.
    pub fn pattern(self) -> &'static str {
        match self {
            Detector::Email => EMAIL,
            Detector::AwsAccessKey => AWS_ACCESS_KEY,
            Detector::GithubToken => GITHUB_TOKEN,
            Detector::OpenaiKey => OPENAI_KEY,
            Detector::PrivateKey => PRIVATE_KEY,
            Detector::Jwt => JWT,
        }
    }

    /// An upper bound on the length of any match of [`Detector::pattern`], in characters (and,
    /// the patterns being ASCII-only, in bytes).
    pub fn max_len(self) -> usize {
        match self {
            // 64 + "@" + 6 × 64 + 24
            Detector::Email => 473,
            Detector::AwsAccessKey => 20,
            // "ghp_" + 255
            Detector::GithubToken => 259,
            // "sk-" + "svcacct-" + 256
            Detector::OpenaiKey => 267,
            // header ≤ 84, body ≤ 4096, footer ≤ 82
            Detector::PrivateKey => 4262,
            // "eyJ" + 512 + ".eyJ" + 4096 + "." + 1536
            Detector::Jwt => 6152,
        }
    }
}
