//! Static zones: upstream's data model, JSON shape and merge rules, with its matching bugs
//! fixed.
//!
//! A zone is `{Name, Records: [{Name, IP, Regexp}], DefaultIP}`. A query name belongs to the
//! first zone (in list order, as upstream) whose name is a suffix of it on a label boundary;
//! the rest of the name (the relative part, e.g. `gateway` or `a.b`) is matched against the
//! records, newest first: exact name, or regexp. No record → the zone's default IP → else
//! NXDOMAIN.
//!
//! Fixed from upstream (UPSTREAM.md §5.2, §9):
//! - names compare without ASCII case (RFC 4343): `GATEWAY.Containers.Internal` is local;
//!   regexps are compiled case-insensitive, record and zone names compared ignoring case;
//! - the zone apex (`containers.internal.` itself) is in the zone: NOERROR without data,
//!   instead of being forwarded to the host's resolver (which would leak the private name
//!   and answer NXDOMAIN for a name that has children);
//! - a local name asked for another type than A gets NOERROR without data (see
//!   [`Lookup::NoData`]) instead of falling through to the host's resolver.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use regex::{Regex, RegexBuilder};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use super::wire::{labels_to_text, rtype, Name};

/// A record's regular expression (Go `regexp` syntax is close to the `regex` crate's).
/// Compiled case-insensitive; compared and serialised by its source text.
#[derive(Clone)]
pub struct ZoneRegex(Regex);

impl ZoneRegex {
    pub fn new(pattern: &str) -> Result<ZoneRegex, regex::Error> {
        RegexBuilder::new(pattern)
            .case_insensitive(true)
            .build()
            .map(ZoneRegex)
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
    /// Unanchored search, as Go's `MatchString`.
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl PartialEq for ZoneRegex {
    fn eq(&self, other: &ZoneRegex) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for ZoneRegex {}

impl fmt::Debug for ZoneRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.as_str())
    }
}

/// One record of a zone. Go's `types.Record`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Name relative to the zone (`gateway`); empty means "match by regexp only".
    pub name: String,
    /// `None` is Go's nil `net.IP` (JSON `""`).
    pub ip: Option<Ipv4Addr>,
    pub regexp: Option<ZoneRegex>,
}

impl Record {
    pub fn new(name: &str, ip: Ipv4Addr) -> Record {
        Record {
            name: name.to_string(),
            ip: Some(ip),
            regexp: None,
        }
    }
    pub fn with_regexp(pattern: &str, ip: Ipv4Addr) -> Result<Record, regex::Error> {
        Ok(Record {
            name: String::new(),
            ip: Some(ip),
            regexp: Some(ZoneRegex::new(pattern)?),
        })
    }

    fn matches(&self, relative: &str) -> bool {
        (!self.name.is_empty() && self.name.eq_ignore_ascii_case(relative))
            || self.regexp.as_ref().is_some_and(|r| r.is_match(relative))
    }
}

/// One zone. Go's `types.Zone`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    /// FQDN with a trailing dot (`containers.internal.`); kept as given for the JSON.
    pub name: String,
    /// Newest first.
    pub records: Vec<Record>,
    pub default_ip: Option<Ipv4Addr>,
}

impl Zone {
    /// How many leading labels of `qname` lie below this zone's apex, if `qname` is in the
    /// zone (0 = the apex itself). Labels compare without case; a trailing dot on the zone
    /// name is optional; an empty name or `.` is the root zone, which holds every name.
    fn relative_labels(&self, labels: &[&[u8]]) -> Option<usize> {
        let apex = self.name.strip_suffix('.').unwrap_or(&self.name);
        let mut rest = labels.len();
        if !apex.is_empty() {
            for zl in apex.rsplit('.') {
                rest = rest.checked_sub(1)?;
                if !labels.get(rest)?.eq_ignore_ascii_case(zl.as_bytes()) {
                    return None;
                }
            }
        }
        Some(rest)
    }

    fn same_name(&self, other: &str) -> bool {
        let a = self.name.strip_suffix('.').unwrap_or(&self.name);
        let b = other.strip_suffix('.').unwrap_or(other);
        a.eq_ignore_ascii_case(b)
    }
}

/// What the local zones say about a (name, type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// One A record.
    A(Ipv4Addr),
    /// The name is local and exists, but has no record of the asked type: NOERROR with an
    /// empty answer (RFC 2308 §2.2 NODATA). Upstream instead forwards such queries (AAAA
    /// gets an empty NOERROR, other types go to the host's resolver); that leaks private
    /// names to the host's DNS, and the NXDOMAIN it answers tells a stub that the name does
    /// not exist at all (RFC 8020), which some resolvers then apply to the A record too.
    NoData,
    /// The name is in a local zone but matches no record and the zone has no default IP.
    NxDomain,
    /// Not in any local zone: forward.
    NotLocal,
}

/// The zone list, in order. Upstream semantics for [`Zones::add`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zones(Vec<Zone>);

impl Zones {
    pub fn new(zones: Vec<Zone>) -> Zones {
        Zones(zones)
    }

    /// gvproxy's default zones (no config file): `containers.internal.` and
    /// `docker.internal.`, each with `gateway` → the gateway and `host` → the host alias.
    pub fn gvproxy_defaults(gateway: Ipv4Addr, host: Ipv4Addr) -> Zones {
        let zone = |name: &str| Zone {
            name: name.to_string(),
            records: vec![Record::new("gateway", gateway), Record::new("host", host)],
            default_ip: None,
        };
        Zones(vec![zone("containers.internal."), zone("docker.internal.")])
    }

    pub fn as_slice(&self) -> &[Zone] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Zone> {
        self.0
    }

    /// Upstream `addZone`: a zone with the same name (here: ignoring case and the trailing
    /// dot) is replaced by the new one, whose records are put in front of the old ones (so
    /// they win) and whose default IP replaces the old one even when unset; otherwise the
    /// zone is appended at the end (after the defaults: zone order decides matches).
    pub fn add(&mut self, mut zone: Zone) {
        if let Some(old) = self.0.iter_mut().find(|z| z.same_name(&zone.name)) {
            zone.records.append(&mut old.records);
            *old = zone;
        } else {
            self.0.push(zone);
        }
    }

    /// Look a presentation-format name up (`Gateway.containers.internal`, trailing dot
    /// optional). A name that is not valid presentation format is not local.
    pub fn lookup(&self, qname: &str, qtype: u16) -> Lookup {
        match Name::from_text(qname) {
            Ok(name) => self.lookup_name(&name, qtype),
            Err(_) => Lookup::NotLocal,
        }
    }

    /// Look a name up for a query of type `qtype` (class IN is the caller's business).
    pub fn lookup_name(&self, qname: &Name, qtype: u16) -> Lookup {
        let labels: Vec<&[u8]> = qname.labels().collect();
        for zone in &self.0 {
            let Some(relative) = zone.relative_labels(&labels) else {
                continue;
            };
            if relative == 0 {
                // The apex: the zone exists (it holds names) but has no address itself.
                return Lookup::NoData;
            }
            let text = labels_to_text(labels.iter().take(relative).copied());
            let found = match zone.records.iter().find(|r| r.matches(&text)) {
                Some(record) => record.ip,
                None if zone.default_ip.is_some() => zone.default_ip,
                None => return Lookup::NxDomain,
            };
            return match (found, qtype) {
                (Some(ip), rtype::A | rtype::ANY) => Lookup::A(ip),
                // A record without an IP (Go's nil net.IP) names an existing host without
                // an address; upstream would send an A record with empty data.
                _ => Lookup::NoData,
            };
        }
        Lookup::NotLocal
    }
}

impl From<Vec<Zone>> for Zones {
    fn from(v: Vec<Zone>) -> Zones {
        Zones(v)
    }
}

// ---- JSON, as Go's encoding/json writes and reads types.Zone ----
//
// Field names are Go's (`Name`, `Records`, `DefaultIP`, `IP`, `Regexp`). Encoding: a nil IP
// is `""`, `Regexp` is omitted when nil, and an empty record list is `null` (Go's nil slice:
// what upstream shows for a zone added with a default IP only). Decoding: field names match
// without case, unknown fields are ignored, `null` leaves a field unset, `""` is a nil IP.

fn ip_text(ip: Option<Ipv4Addr>) -> String {
    ip.map(|ip| ip.to_string()).unwrap_or_default()
}

fn parse_ip<E: de::Error>(text: Option<String>) -> Result<Option<Ipv4Addr>, E> {
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Ok(Some(ip)),
            Ok(IpAddr::V6(ip)) => ip.to_ipv4_mapped().map(Some).ok_or_else(|| {
                E::custom(format!(
                    "invalid IP address: {s} (A records need an IPv4 address)"
                ))
            }),
            // Go: &net.ParseError{Type: "IP address", Text: s}
            Err(_) => Err(E::custom(format!("invalid IP address: {s}"))),
        },
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Record", 2 + usize::from(self.regexp.is_some()))?;
        st.serialize_field("Name", &self.name)?;
        st.serialize_field("IP", &ip_text(self.ip))?;
        if let Some(re) = &self.regexp {
            st.serialize_field("Regexp", re.as_str())?;
        }
        st.end()
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Zone", 3)?;
        st.serialize_field("Name", &self.name)?;
        if self.records.is_empty() {
            st.serialize_field("Records", &())?;
        } else {
            st.serialize_field("Records", &self.records)?;
        }
        st.serialize_field("DefaultIP", &ip_text(self.default_ip))?;
        st.end()
    }
}

impl Serialize for Zones {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Record, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Record;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a record object {\"Name\", \"IP\", \"Regexp\"}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
                let mut r = Record::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key.eq_ignore_ascii_case("name") {
                        if let Some(v) = map.next_value::<Option<String>>()? {
                            r.name = v;
                        }
                    } else if key.eq_ignore_ascii_case("ip") {
                        r.ip = parse_ip(map.next_value::<Option<String>>()?)?;
                    } else if key.eq_ignore_ascii_case("regexp") {
                        r.regexp = match map.next_value::<Option<String>>()? {
                            None => None,
                            Some(p) => Some(ZoneRegex::new(&p).map_err(|e| {
                                de::Error::custom(format!("error parsing regexp: {e}"))
                            })?),
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(r)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Zone, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Zone;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a zone object {\"Name\", \"Records\", \"DefaultIP\"}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Zone, A::Error> {
                let mut z = Zone::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key.eq_ignore_ascii_case("name") {
                        if let Some(v) = map.next_value::<Option<String>>()? {
                            z.name = v;
                        }
                    } else if key.eq_ignore_ascii_case("records") {
                        // Go: a null element decodes to a zero Record.
                        z.records = map
                            .next_value::<Option<Vec<Option<Record>>>>()?
                            .unwrap_or_default()
                            .into_iter()
                            .map(Option::unwrap_or_default)
                            .collect();
                    } else if key.eq_ignore_ascii_case("defaultip") {
                        z.default_ip = parse_ip(map.next_value::<Option<String>>()?)?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(z)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Zones {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Zones, D::Error> {
        Ok(Zones(
            Option::<Vec<Zone>>::deserialize(d)?.unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apex_and_outside_names() {
        let z = Zones::gvproxy_defaults(Ipv4Addr::new(192, 168, 127, 1), Ipv4Addr::LOCALHOST);
        assert_eq!(z.lookup("containers.internal.", rtype::A), Lookup::NoData);
        assert_eq!(z.lookup("internal.", rtype::A), Lookup::NotLocal);
        assert_eq!(
            z.lookup("xcontainers.internal.", rtype::A),
            Lookup::NotLocal
        );
        // A label holding a dot is not two labels.
        assert_eq!(
            z.lookup("gateway\\.containers.internal.", rtype::A),
            Lookup::NotLocal
        );
    }

    #[test]
    fn root_zone_holds_everything() {
        let mut z = Zones::default();
        z.add(Zone {
            name: String::new(),
            records: vec![],
            default_ip: Some(Ipv4Addr::new(1, 2, 3, 4)),
        });
        assert_eq!(
            z.lookup("anything.example.", rtype::A),
            Lookup::A(Ipv4Addr::new(1, 2, 3, 4))
        );
    }
}
