//! Messages found while reading the configuration, before the logger they should go to exists.
//!
//! etcd parses its flags with a temporary logger and builds the real one from what it parsed; Hearth keeps
//! what parsing has to say here and logs it through the configured logger once that is installed, so
//! those lines reach the same outputs, in the same format, as everything else.

/// One message, with its zap-style fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notice {
    pub level: Level,
    pub msg: String,
    pub fields: Vec<(&'static str, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Info,
    Warn,
}

/// Messages in the order they were found.
#[derive(Clone, Debug, Default)]
pub(crate) struct Notices(Vec<Notice>);

impl Notices {
    pub(crate) fn info(&mut self, msg: impl Into<String>, fields: &[(&'static str, String)]) {
        self.push(Level::Info, msg.into(), fields);
    }

    pub(crate) fn warn(&mut self, msg: impl Into<String>, fields: &[(&'static str, String)]) {
        self.push(Level::Warn, msg.into(), fields);
    }

    fn push(&mut self, level: Level, msg: String, fields: &[(&'static str, String)]) {
        self.0.push(Notice {
            level,
            msg,
            fields: fields.to_vec(),
        });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Notice> {
        self.0.iter()
    }

    /// Whether a message contains `text` (for tests).
    #[cfg(test)]
    pub(crate) fn mentions(&self, text: &str) -> bool {
        self.0
            .iter()
            .any(|n| n.msg.contains(text) || n.fields.iter().any(|(_, v)| v.contains(text)))
    }

    /// Logs them all through the installed logger.
    pub(crate) fn emit(&self) {
        for n in &self.0 {
            let fields = crate::logging::fields_json(&n.fields);
            match n.level {
                Level::Info => tracing::info!(zap_fields = %fields, "{}", n.msg),
                Level::Warn => tracing::warn!(zap_fields = %fields, "{}", n.msg),
            }
        }
    }
}
