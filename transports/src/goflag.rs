//! Command lines parsed the way Go's `flag` package does, because podman, CRC and
//! upstream's README invoke gvproxy and gvforwarder that way: `-flag` and `--flag`,
//! `-flag=value` and `-flag value`, booleans as `-flag`, `-flag=true|false`,
//! parsing stops at the first non-flag argument or after `--`.

use std::collections::HashMap;
use std::fmt;

/// How a flag takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `-name` or `-name=true|false`; never consumes the next argument.
    Bool,
    /// `-name value` or `-name=value`; the last one wins.
    Value,
    /// Like `Value`, but every occurrence is kept, in order.
    Repeated,
}

/// One accepted flag, with its default (shown in usage) and help text.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub help: &'static str,
}

impl Spec {
    pub const fn bool(name: &'static str, help: &'static str) -> Self {
        Spec {
            name,
            kind: Kind::Bool,
            default: "false",
            help,
        }
    }
    pub const fn value(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Spec {
            name,
            kind: Kind::Value,
            default,
            help,
        }
    }
    pub const fn repeated(name: &'static str, help: &'static str) -> Self {
        Spec {
            name,
            kind: Kind::Repeated,
            default: "",
            help,
        }
    }
}

/// A command-line error; `Display` is the one line to print before exiting with 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    /// `-h`, `-help` or `--help`: print `usage()` and exit 0.
    Help,
    Unknown(String),
    MissingValue(String),
    BadBool {
        flag: String,
        value: String,
    },
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagError::Help => write!(f, "help requested"),
            FlagError::Unknown(n) => write!(f, "flag provided but not defined: -{n}"),
            FlagError::MissingValue(n) => write!(f, "flag needs an argument: -{n}"),
            FlagError::BadBool { flag, value } => {
                write!(f, "invalid boolean value {value:?} for -{flag}")
            }
        }
    }
}

impl std::error::Error for FlagError {}

/// The parsed command line.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    values: HashMap<&'static str, Vec<String>>,
    /// Arguments after the flags (Go's `flag.Args()`).
    pub rest: Vec<String>,
}

impl Flags {
    /// Parses `args` (without the program name) against `specs`.
    pub fn parse<I, S>(specs: &[Spec], args: I) -> Result<Flags, FlagError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut flags = Flags::default();
        let mut it = args.into_iter().map(Into::into);
        while let Some(arg) = it.next() {
            if arg == "--" {
                flags.rest.extend(it.by_ref());
                break;
            }
            let body = match arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
                Some(b) if !b.is_empty() && !b.starts_with('-') => b,
                _ => {
                    flags.rest.push(arg);
                    flags.rest.extend(it.by_ref());
                    break;
                }
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                if name == "h" || name == "help" {
                    return Err(FlagError::Help);
                }
                return Err(FlagError::Unknown(name.to_string()));
            };
            let value = match spec.kind {
                Kind::Bool => match inline.as_deref() {
                    None => "true".to_string(),
                    Some(v) => parse_bool(v)
                        .ok_or_else(|| FlagError::BadBool {
                            flag: name.to_string(),
                            value: v.to_string(),
                        })?
                        .to_string(),
                },
                Kind::Value | Kind::Repeated => match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| FlagError::MissingValue(name.to_string()))?,
                },
            };
            let slot = flags.values.entry(spec.name).or_default();
            if spec.kind != Kind::Repeated {
                slot.clear();
            }
            slot.push(value);
        }
        Ok(flags)
    }

    /// The last value given for `name`, if it was given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// The value for `name`, or `default` when it was not given.
    pub fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    /// Every value given for a repeated flag, in order.
    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A boolean flag: true when given as `-name` or `-name=true`.
    pub fn bool(&self, name: &str) -> bool {
        self.get(name) == Some("true")
    }

    /// Whether the flag appeared at all.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Usage text in the style of Go's `flag.PrintDefaults`.
pub fn usage(program: &str, specs: &[Spec]) -> String {
    let mut s = format!("Usage of {program}:\n");
    for spec in specs {
        let arg = match spec.kind {
            Kind::Bool => "",
            Kind::Value | Kind::Repeated => " string",
        };
        s.push_str(&format!("  -{}{}\n    \t{}", spec.name, arg, spec.help));
        if spec.kind == Kind::Value && !spec.default.is_empty() {
            s.push_str(&format!(" (default {:?})", spec.default));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[Spec] = &[
        Spec::bool("debug", "debug"),
        Spec::value("mtu", "1500", "mtu"),
        Spec::repeated("listen", "listen"),
    ];

    fn parse(args: &[&str]) -> Result<Flags, FlagError> {
        Flags::parse(SPECS, args.iter().copied())
    }

    #[test]
    fn go_spellings() {
        let f = parse(&[
            "--listen",
            "unix:///a",
            "-listen=tcp://:1",
            "-mtu",
            "9000",
            "--debug",
        ])
        .unwrap();
        assert_eq!(f.all("listen"), ["unix:///a", "tcp://:1"]);
        assert_eq!(f.get("mtu"), Some("9000"));
        assert!(f.bool("debug"));
        assert!(f.rest.is_empty());
    }

    #[test]
    fn last_value_wins_and_bools_take_no_argument() {
        let f = parse(&["-mtu=1", "-mtu=2", "-debug", "extra", "-mtu=3"]).unwrap();
        assert_eq!(f.get("mtu"), Some("2"));
        assert!(f.bool("debug"));
        assert_eq!(f.rest, ["extra", "-mtu=3"]);
        let f = parse(&["-debug=false"]).unwrap();
        assert!(!f.bool("debug"));
        assert!(f.is_set("debug"));
        assert_eq!(f.get_or("mtu", "1500"), "1500");
    }

    #[test]
    fn errors_are_one_line() {
        assert_eq!(
            parse(&["-nope"]).unwrap_err().to_string(),
            "flag provided but not defined: -nope"
        );
        assert_eq!(
            parse(&["-mtu"]).unwrap_err().to_string(),
            "flag needs an argument: -mtu"
        );
        assert!(matches!(
            parse(&["-debug=maybe"]),
            Err(FlagError::BadBool { .. })
        ));
        assert_eq!(parse(&["-h"]).unwrap_err(), FlagError::Help);
        assert_eq!(parse(&["--", "-mtu"]).unwrap().rest, ["-mtu"]);
        assert_eq!(parse(&["-"]).unwrap().rest, ["-"]);
    }

    #[test]
    fn usage_lists_flags() {
        let u = usage("gvproxy", SPECS);
        assert!(u.contains("-mtu string"));
        assert!(u.contains("(default \"1500\")"));
    }
}
