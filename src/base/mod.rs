//! Layer 0: the vocabulary every other layer shares — ids, addresses, close reasons, send
//! outcomes and saturating deadlines. Depends on nothing but `std`.

mod addr;
mod budget;
mod close;
mod deadline;
mod ids;
mod send;
mod stamp;

pub(crate) use addr::PeerAddr;
pub use addr::{Addr, PeerCred};
pub(crate) use budget::Budget;
pub use budget::{BudgetStats, DEFAULT_MEMORY_BUDGET};
pub use close::CloseReason;
pub use deadline::{deadline, deadline_opt, earliest, elapsed, saturating};
pub use ids::{ConnId, GroupId};
pub use send::{Delivery, DropPolicy, SendStatus};
pub(crate) use stamp::{Stamp, Tick};
