//! Paging, as every service's list queries do it: a page starts after the previous
//! page's `next` and holds at most `limit` items (the service's default when absent).

use serde::{Deserialize, Serialize};

/// Where a page starts and how long it may be.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageRequest {
    /// Start after this name or key (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
