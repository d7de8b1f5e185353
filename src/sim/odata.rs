//! The OData query subset Graph's `/users` understands, with Graph's refusals.
//!
//! Facts relied on (FACTS.md "Microsoft Graph"):
//! * `$top` is 1..=999 (default 100);
//! * `signInActivity` filters support `eq ne not ge le` on one sub-property and
//!   cannot be combined with other properties;
//! * `startswith(userPrincipalName,'x')` is case-insensitive;
//! * `ne`, `not`, `endsWith` are advanced queries (`ConsistencyLevel: eventual`
//!   plus `$count=true`) in workforce tenants and refused outright in B2C.

use super::tenant::{Tenant, TenantKind};

/// A literal on the right of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Bool(bool),
    Str(String),
    Date(i64),
    Num(i64),
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Cmp(String, Op, Lit),
    StartsWith(String, String),
    EndsWith(String, String),
}

/// Why a query was refused: `(status, code, message)`.
pub type Refusal = (u16, &'static str, String);

fn unsupported(msg: impl Into<String>) -> Refusal {
    (400, "Request_UnsupportedQuery", msg.into())
}
fn bad(msg: impl Into<String>) -> Refusal {
    (400, "BadRequest", msg.into())
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Open,
    Close,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, Refusal> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    if i >= cs.len() {
                        return Err(bad("Invalid filter clause: unterminated string literal."));
                    }
                    if cs[i] == '\'' {
                        if i + 1 < cs.len() && cs[i + 1] == '\'' {
                            v.push('\'');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    v.push(cs[i]);
                    i += 1;
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let start = i;
                while i < cs.len() && !matches!(cs[i], ' ' | '\t' | '(' | ')' | ',' | '\'') {
                    i += 1;
                }
                out.push(Tok::Ident(cs[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(x)) if x.eq_ignore_ascii_case(w))
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn expect(&mut self, t: Tok) -> Result<(), Refusal> {
        if self.next() == Some(t) {
            Ok(())
        } else {
            Err(bad("Invalid filter clause: syntax error."))
        }
    }
    fn or_expr(&mut self) -> Result<Filter, Refusal> {
        let mut parts = vec![self.and_expr()?];
        while self.peek_word("or") {
            self.pos += 1;
            parts.push(self.and_expr()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }
    fn and_expr(&mut self) -> Result<Filter, Refusal> {
        let mut parts = vec![self.unary()?];
        while self.peek_word("and") {
            self.pos += 1;
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }
    fn unary(&mut self) -> Result<Filter, Refusal> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        match self.next() {
            Some(Tok::Open) => {
                let e = self.or_expr()?;
                self.expect(Tok::Close)?;
                Ok(e)
            }
            Some(Tok::Ident(name)) => {
                let lower = name.to_ascii_lowercase();
                if lower == "startswith" || lower == "endswith" {
                    self.expect(Tok::Open)?;
                    let prop = match self.next() {
                        Some(Tok::Ident(p)) => p,
                        _ => return Err(bad("Invalid filter clause: property expected.")),
                    };
                    self.expect(Tok::Comma)?;
                    let val = match self.next() {
                        Some(Tok::Str(v)) => v,
                        _ => return Err(bad("Invalid filter clause: string literal expected.")),
                    };
                    self.expect(Tok::Close)?;
                    return Ok(if lower == "startswith" {
                        Filter::StartsWith(prop, val)
                    } else {
                        Filter::EndsWith(prop, val)
                    });
                }
                if name.contains("/any(") || lower == "any" {
                    return Err(unsupported("Unsupported query."));
                }
                let op = match self.next() {
                    Some(Tok::Ident(o)) => match o.to_ascii_lowercase().as_str() {
                        "eq" => Op::Eq,
                        "ne" => Op::Ne,
                        "ge" => Op::Ge,
                        "le" => Op::Le,
                        "gt" => Op::Gt,
                        "lt" => Op::Lt,
                        other => {
                            return Err(bad(format!(
                                "Invalid filter clause: unknown operator '{other}'."
                            )));
                        }
                    },
                    _ => return Err(bad("Invalid filter clause: operator expected.")),
                };
                let lit = match self.next() {
                    Some(Tok::Str(v)) => Lit::Str(v),
                    Some(Tok::Ident(v)) => match v.to_ascii_lowercase().as_str() {
                        "true" => Lit::Bool(true),
                        "false" => Lit::Bool(false),
                        "null" => Lit::Null,
                        _ => match (chrono::DateTime::parse_from_rfc3339(&v), v.parse::<i64>()) {
                            (Ok(d), _) => Lit::Date(d.timestamp()),
                            (_, Ok(n)) => Lit::Num(n),
                            _ => {
                                return Err(bad(format!(
                                    "Invalid filter clause: '{v}' is not a valid literal."
                                )));
                            }
                        },
                    },
                    _ => return Err(bad("Invalid filter clause: literal expected.")),
                };
                Ok(Filter::Cmp(name, op, lit))
            }
            _ => Err(bad("Invalid filter clause: syntax error.")),
        }
    }
}

/// Parse a `$filter` expression.
pub fn parse_filter(s: &str) -> Result<Filter, Refusal> {
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
    };
    let f = p.or_expr()?;
    if p.pos != p.toks.len() {
        return Err(bad("Invalid filter clause: syntax error."));
    }
    Ok(f)
}

/// User properties that can be filtered, with their kind.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PropKind {
    Bool,
    Str,
    Date,
    SignIn,
}

/// Canonical name and kind of a filterable user property (case-insensitive).
pub fn filter_prop(name: &str) -> Option<(&'static str, PropKind)> {
    const P: [(&str, PropKind); 15] = [
        ("id", PropKind::Str),
        ("accountEnabled", PropKind::Bool),
        ("userType", PropKind::Str),
        ("creationType", PropKind::Str),
        ("userPrincipalName", PropKind::Str),
        ("displayName", PropKind::Str),
        ("mail", PropKind::Str),
        ("jobTitle", PropKind::Str),
        ("department", PropKind::Str),
        ("createdDateTime", PropKind::Date),
        ("onPremisesSyncEnabled", PropKind::Bool),
        ("externalUserState", PropKind::Str),
        ("signInActivity/lastSignInDateTime", PropKind::SignIn),
        (
            "signInActivity/lastNonInteractiveSignInDateTime",
            PropKind::SignIn,
        ),
        (
            "signInActivity/lastSuccessfulSignInDateTime",
            PropKind::SignIn,
        ),
    ];
    P.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .copied()
}

fn walk<'a>(f: &'a Filter, out: &mut Vec<&'a Filter>) {
    match f {
        Filter::And(v) | Filter::Or(v) => v.iter().for_each(|x| walk(x, out)),
        Filter::Not(x) => {
            out.push(f);
            walk(x, out)
        }
        _ => out.push(f),
    }
}

/// Check a parsed filter against what Graph accepts for this tenant kind.
pub fn validate(f: &Filter, kind: TenantKind, advanced: bool) -> Result<(), Refusal> {
    let mut leaves = Vec::new();
    walk(f, &mut leaves);
    let mut sign_in = 0;
    let mut other = 0;
    for leaf in &leaves {
        let (prop, op_is_advanced) = match leaf {
            Filter::Not(_) => {
                if kind == TenantKind::B2c {
                    return Err(unsupported(
                        "Unsupported query: 'not' is not supported in Azure AD B2C tenants.",
                    ));
                }
                (None, true)
            }
            Filter::Cmp(p, op, _) => (Some((p, *op)), *op == Op::Ne),
            Filter::StartsWith(p, _) => (Some((p, Op::Eq)), false),
            Filter::EndsWith(p, _) => {
                if kind == TenantKind::B2c {
                    return Err(unsupported(
                        "Unsupported query: 'endsWith' is not supported in Azure AD B2C tenants.",
                    ));
                }
                (Some((p, Op::Eq)), true)
            }
            _ => (None, false),
        };
        let Some((p, op)) = prop else {
            if op_is_advanced && !advanced {
                return Err(unsupported(
                    "Unsupported query: 'not' requires ConsistencyLevel eventual and $count=true.",
                ));
            }
            continue;
        };
        let Some((canon, pk)) = filter_prop(p) else {
            return Err((
                400,
                "Request_BadRequest",
                format!("Could not find a property named '{p}' on type 'microsoft.graph.user'."),
            ));
        };
        if pk == PropKind::SignIn {
            sign_in += 1;
            if matches!(op, Op::Gt | Op::Lt)
                || matches!(leaf, Filter::StartsWith(..) | Filter::EndsWith(..))
            {
                return Err(unsupported(format!(
                    "Unsupported or invalid query filter clause specified for property '{canon}' of resource 'User'."
                )));
            }
            if op == Op::Ne && kind == TenantKind::B2c {
                return Err(unsupported(
                    "Unsupported query: 'ne' is not supported in Azure AD B2C tenants.",
                ));
            }
            continue;
        }
        other += 1;
        if op == Op::Ne {
            if kind == TenantKind::B2c {
                return Err(unsupported(
                    "Unsupported query: 'ne' is not supported in Azure AD B2C tenants.",
                ));
            }
            if !advanced {
                return Err(unsupported(format!(
                    "Unsupported or invalid query filter clause specified for property '{canon}' of resource 'User'."
                )));
            }
        }
        if op_is_advanced && !advanced {
            return Err(unsupported(format!(
                "Unsupported or invalid query filter clause specified for property '{canon}' of resource 'User'."
            )));
        }
        let ok = match pk {
            PropKind::Bool => matches!(
                leaf,
                Filter::Cmp(_, Op::Eq | Op::Ne, Lit::Bool(_) | Lit::Null)
            ),
            PropKind::Date => matches!(
                leaf,
                Filter::Cmp(_, Op::Ge | Op::Le | Op::Eq | Op::Ne, Lit::Date(_))
            ),
            PropKind::Str => match leaf {
                Filter::Cmp(_, Op::Eq | Op::Ne, Lit::Str(_) | Lit::Null) => true,
                Filter::StartsWith(..) | Filter::EndsWith(..) => {
                    matches!(
                        canon,
                        "userPrincipalName" | "displayName" | "mail" | "jobTitle" | "department"
                    )
                }
                _ => false,
            },
            PropKind::SignIn => true,
        };
        if !ok {
            return Err(unsupported(format!(
                "Unsupported or invalid query filter clause specified for property '{canon}' of resource 'User'."
            )));
        }
    }
    if sign_in > 0 && (other > 0 || sign_in > 1) {
        return Err(unsupported(
            "Unsupported or invalid query filter clause specified for property 'signInActivity' of resource 'User'. signInActivity cannot be combined with other filter clauses.",
        ));
    }
    Ok(())
}

/// A property value as the filter sees it.
#[derive(Debug)]
pub enum Val {
    Bool(bool),
    Str(String),
    Date(i64),
    Null,
}

/// The value of a filterable property of user `i`, as Graph would show it.
pub fn value_of(t: &Tenant, i: u32, canon: &str) -> Val {
    let u = &t.users[i as usize];
    let date = |s: i64| if s == 0 { Val::Null } else { Val::Date(s) };
    match canon {
        "id" => Val::Str(t.user_id(i)),
        "accountEnabled" => Val::Bool(u.enabled()),
        "userType" => Val::Str(t.user_type(i).to_string()),
        "creationType" => t
            .creation_type(i)
            .map(|s| Val::Str(s.to_string()))
            .unwrap_or(Val::Null),
        "userPrincipalName" => Val::Str(t.upn(i)),
        "displayName" => Val::Str(t.display_name(i)),
        "mail" => t.mail(i).map(Val::Str).unwrap_or(Val::Null),
        "jobTitle" => t
            .job_title(i)
            .map(|s| Val::Str(s.to_string()))
            .unwrap_or(Val::Null),
        "department" => t
            .department(i)
            .map(|s| Val::Str(s.to_string()))
            .unwrap_or(Val::Null),
        "createdDateTime" => Val::Date(u.created),
        "externalUserState" => {
            if u.arch.is_guest() {
                let pending = u.flags & super::tenant::F_PENDING != 0;
                Val::Str(
                    if pending {
                        "PendingAcceptance"
                    } else {
                        "Accepted"
                    }
                    .to_string(),
                )
            } else {
                Val::Null
            }
        }
        "onPremisesSyncEnabled" => {
            if u.flags & super::tenant::F_SYNCED != 0 {
                Val::Bool(true)
            } else {
                Val::Null
            }
        }
        "signInActivity/lastSignInDateTime" => date(super::graph::visible_interactive(u)),
        "signInActivity/lastNonInteractiveSignInDateTime" => {
            date(super::graph::visible_noninteractive(u))
        }
        "signInActivity/lastSuccessfulSignInDateTime" => date(super::graph::visible_success(u)),
        _ => Val::Null,
    }
}

/// Evaluate a validated filter for user `i`.
pub fn matches(t: &Tenant, i: u32, f: &Filter) -> bool {
    match f {
        Filter::And(v) => v.iter().all(|x| matches(t, i, x)),
        Filter::Or(v) => v.iter().any(|x| matches(t, i, x)),
        Filter::Not(x) => !matches(t, i, x),
        Filter::StartsWith(p, s) | Filter::EndsWith(p, s) => {
            let Some((canon, _)) = filter_prop(p) else {
                return false;
            };
            if canon == "userPrincipalName"
                && matches!(f, Filter::StartsWith(..))
                && let Some(answer) = t.upn_head_says(i, s)
            {
                return answer;
            }
            match value_of(t, i, canon) {
                Val::Str(v) => {
                    let (v, s) = (v.to_lowercase(), s.to_lowercase());
                    if matches!(f, Filter::StartsWith(..)) {
                        v.starts_with(&s)
                    } else {
                        v.ends_with(&s)
                    }
                }
                _ => false,
            }
        }
        Filter::Cmp(p, op, lit) => {
            let Some((canon, _)) = filter_prop(p) else {
                return false;
            };
            let v = value_of(t, i, canon);
            let ord = match (&v, lit) {
                (Val::Null, Lit::Null) => Some(std::cmp::Ordering::Equal),
                (Val::Null, _) | (_, Lit::Null) => None,
                (Val::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
                (Val::Str(a), Lit::Str(b)) => Some(a.to_lowercase().cmp(&b.to_lowercase())),
                (Val::Date(a), Lit::Date(b)) => Some(a.cmp(b)),
                _ => return false,
            };
            use std::cmp::Ordering::*;
            match (op, ord) {
                (Op::Eq, Some(o)) => o == Equal,
                (Op::Ne, Some(o)) => o != Equal,
                (Op::Ne, None) => true,
                (Op::Ge, Some(o)) => o != Less,
                (Op::Le, Some(o)) => o != Greater,
                (Op::Gt, Some(o)) => o == Greater,
                (Op::Lt, Some(o)) => o == Less,
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let f = parse_filter("accountEnabled eq true and startswith(userPrincipalName,'a')")
            .expect("parse");
        assert!(validate(&f, TenantKind::Workforce, false).is_ok());
        let f = parse_filter("signInActivity/lastSignInDateTime le 2024-01-01T00:00:00Z")
            .expect("parse");
        assert!(validate(&f, TenantKind::Workforce, false).is_ok());
        let f = parse_filter(
            "signInActivity/lastSignInDateTime le 2024-01-01T00:00:00Z and accountEnabled eq true",
        )
        .expect("parse");
        assert!(validate(&f, TenantKind::Workforce, false).is_err());
        let f = parse_filter("accountEnabled ne true").expect("parse");
        assert!(validate(&f, TenantKind::B2c, true).is_err());
        assert!(validate(&f, TenantKind::Workforce, false).is_err());
        assert!(validate(&f, TenantKind::Workforce, true).is_ok());
        assert!(parse_filter("accountEnabled eq").is_err());
        assert!(parse_filter("startswith(userPrincipalName,'o''b')").is_ok());
    }
}
