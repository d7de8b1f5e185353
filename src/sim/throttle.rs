//! Graph's throttling, per FACTS.md and Microsoft's "service-specific throttling limits":
//!
//! * identity & access: per app per tenant 3,500 / 5,000 / 8,000 resource units
//!   per 10 s for tenants under 50 / 50–500 / over 500 users; `GET users` costs 2,
//!   `groups/{id}/transitiveMembers` 5, `subscribedSkus` 3, anything else 1;
//!   `$select` −1, `$expand` +1, `$top` under 20 −1, never below 1;
//! * writes: 3,000 per app per tenant per 150 s;
//! * identity reports (`auditLogs`): 5 requests per 10 s;
//! * `/invitations`: 150 per 5 s;
//! * usage reports: 14 per 10 min per report API;
//! * B2C: 200 requests per second per tenant.
//!
//! A throttled request gets 429, `Retry-After` in seconds and Graph's error body.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Budgets; tests shrink them or switch throttling off.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ThrottleConfig {
    pub enabled: bool,
    /// Override of the resource-unit budget per 10 s (otherwise by tenant size).
    pub resource_units_per_10s: Option<u32>,
    pub writes_per_150s: u32,
    pub audits_per_10s: u32,
    pub invitations_per_5s: u32,
    pub b2c_per_second: u32,
    pub reports_per_10min: u32,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            resource_units_per_10s: None,
            writes_per_150s: 3_000,
            audits_per_10s: 5,
            invitations_per_5s: 150,
            b2c_per_second: 200,
            reports_per_10min: 14,
        }
    }
}

/// Resource-unit budget per 10 s by tenant size (S/M/L).
pub fn budget_for_size(users: usize) -> u32 {
    if users < 50 {
        3_500
    } else if users <= 500 {
        5_000
    } else {
        8_000
    }
}

#[derive(Debug, Default)]
struct Window {
    events: VecDeque<(i64, u32)>,
    used: u64,
}

impl Window {
    /// Spend `cost` if the last `span_ms` leave room under `limit`; else the
    /// seconds until enough has drained.
    fn spend(&mut self, now_ms: i64, span_ms: i64, limit: u32, cost: u32) -> Result<(), u64> {
        while let Some(&(t, c)) = self.events.front() {
            if t + span_ms <= now_ms {
                self.events.pop_front();
                self.used -= u64::from(c);
            } else {
                break;
            }
        }
        if self.used + u64::from(cost) > u64::from(limit) {
            let mut freed = 0u64;
            let need = self.used + u64::from(cost) - u64::from(limit);
            let mut until = now_ms + span_ms;
            for &(t, c) in &self.events {
                freed += u64::from(c);
                if freed >= need {
                    until = t + span_ms;
                    break;
                }
            }
            let secs = ((until - now_ms).max(0) as u64).div_ceil(1000).max(1);
            return Err(secs);
        }
        self.events.push_back((now_ms, cost));
        self.used += u64::from(cost);
        Ok(())
    }
}

/// What a request costs and which buckets it draws on.
#[derive(Clone, Debug)]
pub struct Cost {
    pub resource_units: u32,
    pub write: bool,
    pub bucket: Bucket,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bucket {
    Identity,
    Audits,
    Invitations,
    Report(String),
}

/// Why a request was throttled.
#[derive(Clone, Debug)]
pub struct Throttled {
    pub retry_after: u64,
    pub information: &'static str,
    pub limit: &'static str,
}

#[derive(Debug, Default)]
pub struct Throttle {
    pub config: ThrottleConfig,
    ru: Window,
    writes: Window,
    audits: Window,
    invitations: Window,
    b2c: Window,
    reports: HashMap<String, Window>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    /// Forget past spending (tests, after changing the configuration).
    pub fn reset(&mut self) {
        let config = self.config.clone();
        *self = Throttle::new(config);
    }

    /// Charge one request; `Err` when it must be refused with 429.
    pub fn charge(
        &mut self,
        now_ms: i64,
        cost: &Cost,
        tenant_users: usize,
        b2c: bool,
    ) -> Result<(), Throttled> {
        if !self.config.enabled {
            return Ok(());
        }
        let c = &self.config;
        if b2c {
            self.b2c
                .spend(now_ms, 1_000, c.b2c_per_second, 1)
                .map_err(|s| Throttled {
                    retry_after: s,
                    information: "ResourceUnitLimitExceeded",
                    limit: "ReadWrite",
                })?;
        }
        match &cost.bucket {
            Bucket::Report(name) => {
                let w = self.reports.entry(name.clone()).or_default();
                return w
                    .spend(now_ms, 600_000, c.reports_per_10min, 1)
                    .map_err(|s| Throttled {
                        retry_after: s,
                        information: "ReportLimitExceeded",
                        limit: "Read",
                    });
            }
            Bucket::Audits => {
                return self
                    .audits
                    .spend(now_ms, 10_000, c.audits_per_10s, 1)
                    .map_err(|s| Throttled {
                        retry_after: s,
                        information: "ReportLimitExceeded",
                        limit: "Read",
                    });
            }
            Bucket::Invitations => {
                self.invitations
                    .spend(now_ms, 5_000, c.invitations_per_5s, 1)
                    .map_err(|s| Throttled {
                        retry_after: s,
                        information: "InvitationLimitExceeded",
                        limit: "Write",
                    })?;
            }
            Bucket::Identity => {}
        }
        let budget = c
            .resource_units_per_10s
            .unwrap_or_else(|| budget_for_size(tenant_users));
        let writes = c.writes_per_150s;
        self.ru
            .spend(now_ms, 10_000, budget, cost.resource_units)
            .map_err(|s| Throttled {
                retry_after: s,
                information: "ResourceUnitLimitExceeded",
                limit: "ReadWrite",
            })?;
        if cost.write {
            self.writes
                .spend(now_ms, 150_000, writes, 1)
                .map_err(|s| Throttled {
                    retry_after: s,
                    information: "WriteLimitExceeded",
                    limit: "Write",
                })?;
        }
        Ok(())
    }

    /// Share of the resource-unit budget used, for `x-ms-throttle-limit-percentage`.
    pub fn ru_fraction(&self, tenant_users: usize) -> f64 {
        let budget = self
            .config
            .resource_units_per_10s
            .unwrap_or_else(|| budget_for_size(tenant_users));
        self.ru.used as f64 / f64::from(budget.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_refuses_and_recovers() {
        let mut w = Window::default();
        for i in 0..5 {
            assert!(w.spend(i, 10_000, 5, 1).is_ok());
        }
        assert_eq!(w.spend(100, 10_000, 5, 1), Err(10));
        assert!(w.spend(10_001, 10_000, 5, 1).is_ok());
    }
}
