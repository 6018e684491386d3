//! Prompts per record kind: the defaults ship in `extractor/prompts/*.md`; a directory with
//! files of the same names overrides them, and a CUSTOM strategy appends to or replaces its
//! kind's prompt.

use crate::RecordKind;
use std::path::Path;

/// How a custom prompt combines with the kind's prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptMode {
    Append,
    Replace,
}

/// The system prompts in force for one extractor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Prompts {
    semantic: String,
    preference: String,
    summary: String,
    episodic: String,
}

const FILES: [(&str, &str); 4] = [
    ("semantic.md", include_str!("../../prompts/semantic.md")),
    ("preference.md", include_str!("../../prompts/preference.md")),
    ("summary.md", include_str!("../../prompts/summary.md")),
    ("episodic.md", include_str!("../../prompts/episodic.md")),
];

impl Default for Prompts {
    fn default() -> Self {
        Self {
            semantic: FILES[0].1.to_string(),
            preference: FILES[1].1.to_string(),
            summary: FILES[2].1.to_string(),
            episodic: FILES[3].1.to_string(),
        }
    }
}

impl Prompts {
    /// The defaults, with any of `semantic.md`, `preference.md`, `summary.md`,
    /// `episodic.md` found in `dir` taking their place.
    pub fn from_dir(dir: &Path) -> std::io::Result<Self> {
        let mut prompts = Self::default();
        for (file, _) in FILES {
            let path = dir.join(file);
            if path.is_file() {
                let text = std::fs::read_to_string(&path)?;
                *prompts.slot(file) = text;
            }
        }
        Ok(prompts)
    }

    fn slot(&mut self, file: &str) -> &mut String {
        match file {
            "semantic.md" => &mut self.semantic,
            "preference.md" => &mut self.preference,
            "summary.md" => &mut self.summary,
            _ => &mut self.episodic,
        }
    }

    /// These prompts with `custom` appended to, or replacing, the prompt of `kind`.
    pub fn customised(mut self, kind: RecordKind, custom: &str, mode: PromptMode) -> Self {
        let prompt = match kind {
            RecordKind::Fact => &mut self.semantic,
            RecordKind::Preference => &mut self.preference,
            RecordKind::Summary => &mut self.summary,
            RecordKind::Episode => &mut self.episodic,
        };
        match mode {
            PromptMode::Append => {
                prompt.push_str("\n\n");
                prompt.push_str(custom);
            }
            PromptMode::Replace => *prompt = custom.to_string(),
        }
        self
    }

    /// The system prompt for a kind.
    pub fn for_kind(&self, kind: RecordKind) -> &str {
        match kind {
            RecordKind::Fact => &self.semantic,
            RecordKind::Preference => &self.preference,
            RecordKind::Summary => &self.summary,
            RecordKind::Episode => &self.episodic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_override_and_custom_prompts_combine() {
        let dir = std::env::temp_dir().join(format!("memd-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("summary.md"), "Summarise tersely.").unwrap();
        let prompts = Prompts::from_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(prompts.for_kind(RecordKind::Summary), "Summarise tersely.");
        assert_eq!(
            prompts.for_kind(RecordKind::Fact),
            Prompts::default().for_kind(RecordKind::Fact)
        );
        let appended =
            prompts
                .clone()
                .customised(RecordKind::Fact, "Only medical facts.", PromptMode::Append);
        assert!(
            appended
                .for_kind(RecordKind::Fact)
                .ends_with("\n\nOnly medical facts.")
        );
        let replaced = prompts.customised(RecordKind::Fact, "Only dates.", PromptMode::Replace);
        assert_eq!(replaced.for_kind(RecordKind::Fact), "Only dates.");
    }
}
