//! Supervision: processes with mailboxes, supervisors, links and monitors.
