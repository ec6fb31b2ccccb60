//! The clinical data the guardrails use — drugs, their classes and usual
//! adult daily doses, interactions, allergens, conditions and the rules —
//! as TOML files embedded in the binary (`src/guardrails/data/`), any of
//! which a site may replace with its own copy in `PWA_GUARDRAILS_DIR`.
//! Every figure carries its source; the files are checked whole when the
//! server starts, so a broken override stops it with the file and the fault.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::model::Severity;
use super::text::{Token, TokenKind, tokenize};

/// The data files, by name, as built in.
const BUILT_IN: [(&str, &str); 6] = [
    ("drugs.toml", include_str!("data/drugs.toml")),
    ("classes.toml", include_str!("data/classes.toml")),
    ("interactions.toml", include_str!("data/interactions.toml")),
    ("allergens.toml", include_str!("data/allergens.toml")),
    ("conditions.toml", include_str!("data/conditions.toml")),
    ("rules.toml", include_str!("data/rules.toml")),
];

/// A data file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("guardrails data {file}: {message}")]
pub struct DataError {
    /// The file (its path, for an override).
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// The unit a drug's doses are given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DoseUnit {
    /// Milligrams (a dose in g or mcg is converted).
    Mg,
    /// Micrograms.
    Mcg,
    /// International units (insulin, heparin).
    Units,
}

/// A drug.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drug {
    /// The generic name, lower case.
    pub generic: String,
    /// Its classes (ids in classes.toml).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Brand names and other names it is said by.
    #[serde(default)]
    pub names: Vec<String>,
    /// The unit of `daily_max`.
    pub unit: Option<DoseUnit>,
    /// The usual adult daily dose range, low end.
    pub daily_min: Option<f64>,
    /// The usual adult maximum daily dose.
    pub daily_max: Option<f64>,
    /// Where the figures come from (a key of `[sources]`).
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrugsFile {
    sources: BTreeMap<String, String>,
    drug: Vec<Drug>,
}

/// A drug class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrugClass {
    /// Its id (`statin`).
    pub id: String,
    /// For people ("statins").
    pub name: String,
    /// Whether two different drugs of it at once is duplicate therapy.
    #[serde(default)]
    pub duplicate_therapy: bool,
    /// Names the class is said by ("statins", "ACE inhibitors").
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassesFile {
    class: Vec<DrugClass>,
}

/// A pair of drugs (or classes) that interact.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interaction {
    /// Drugs of one side: generic names or `class:<id>`.
    pub a: Vec<String>,
    /// Drugs of the other side.
    pub b: Vec<String>,
    /// How serious.
    pub severity: String,
    /// For the clinician.
    pub message: String,
    /// Where it comes from.
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InteractionsFile {
    interaction: Vec<Interaction>,
}

/// An allergen and the drugs an allergy to it rules out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allergen {
    /// Its id (`penicillin`).
    pub id: String,
    /// Names it is said by.
    pub names: Vec<String>,
    /// The drugs it rules out: generic names or `class:<id>`.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Where the conflict comes from.
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllergensFile {
    allergen: Vec<Allergen>,
}

/// A condition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionEntry {
    /// Its normalised name (`sepsis`).
    pub id: String,
    /// Names it is said by.
    pub names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionsFile {
    condition: Vec<ConditionEntry>,
}

/// A rule's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    /// The stable id.
    pub id: String,
    /// Its severity (DRUG_INTERACTION takes each interaction's own).
    pub severity: String,
    /// Whether it runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What it checks, for people.
    pub description: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    version: String,
    /// The score lost per alert, by severity.
    score_weights: BTreeMap<String, f64>,
    /// The class whose drugs count as an antibiotic (SEPSIS_NO_ANTIBIOTIC).
    antibiotic_class: String,
    /// The condition id the sepsis rule looks for.
    sepsis_condition: String,
    rule: Vec<RuleEntry>,
}

/// What a phrase in the text names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// A drug (index into `drugs`).
    Drug(usize),
    /// A drug class (index into `classes`).
    Class(usize),
    /// An allergen (index into `allergens`).
    Allergen(usize),
    /// A condition (index into `conditions`).
    Condition(usize),
}

/// The rules the service runs, known by id.
pub const RULE_IDS: [&str; 8] = [
    "DRUG_INTERACTION",
    "ALLERGY_CONFLICT",
    "DUPLICATE_THERAPY",
    "DOSE_OUT_OF_RANGE",
    "SEPSIS_NO_ANTIBIOTIC",
    "PII_IDENTIFIER",
    "DATE_OUTSIDE_ENCOUNTER",
    "UNSUPPORTED_BY_TRANSCRIPT",
];

/// The loaded, checked data.
#[derive(Debug)]
pub struct Lexicon {
    /// Drugs.
    pub drugs: Vec<Drug>,
    /// The sources the drug figures cite.
    pub sources: BTreeMap<String, String>,
    /// Classes.
    pub classes: Vec<DrugClass>,
    /// Interactions.
    pub interactions: Vec<Interaction>,
    /// Allergens.
    pub allergens: Vec<Allergen>,
    /// Conditions.
    pub conditions: Vec<ConditionEntry>,
    /// Rules in the order they run.
    pub rules: Vec<RuleEntry>,
    /// The score lost per alert.
    pub weights: HashMap<Severity, f64>,
    /// The antibiotic class's index.
    pub antibiotic_class: usize,
    /// The sepsis condition's index.
    pub sepsis_condition: usize,
    /// `version+digest`.
    pub version: String,
    by_generic: HashMap<String, usize>,
    class_by_id: HashMap<String, usize>,
    /// Phrases by their first token's key, longest first.
    phrases: HashMap<String, Vec<(Vec<String>, Term)>>,
}

/// The key a token is matched by: its word, or a number's digits.
pub fn token_key(token: &Token) -> Option<String> {
    match &token.kind {
        TokenKind::Word(w) => Some(w.clone()),
        TokenKind::Number {
            digits: Some(d), ..
        } => Some(d.clone()),
        _ => None,
    }
}

fn phrase_keys(phrase: &str) -> Vec<String> {
    tokenize(phrase).iter().filter_map(token_key).collect()
}

fn parse<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, DataError> {
    // One line (a setting error is one line): where, and what.
    toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |span| {
            text[..span.start.min(text.len())].lines().count().max(1)
        });
        DataError {
            file: file.to_owned(),
            message: format!("line {line}: {}", e.message().trim().replace('\n', " ")),
        }
    })
}

impl Lexicon {
    /// The built-in data.
    pub fn built_in() -> Result<Self, DataError> {
        Self::load(None)
    }

    /// The data, with any file present in `dir` replacing the built-in one.
    pub fn load(dir: Option<&Path>) -> Result<Self, DataError> {
        let mut texts: Vec<(String, String)> = Vec::with_capacity(BUILT_IN.len());
        for (name, built_in) in BUILT_IN {
            let override_path: Option<PathBuf> = dir.map(|d| d.join(name));
            match override_path {
                Some(path) if path.exists() => {
                    let text = std::fs::read_to_string(&path).map_err(|e| DataError {
                        file: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                    texts.push((path.display().to_string(), text));
                }
                _ => texts.push((name.to_owned(), built_in.to_owned())),
            }
        }
        let digest = {
            let mut hasher = Sha256::new();
            for (_, text) in &texts {
                hasher.update(text.as_bytes());
                hasher.update([0]);
            }
            crate::digest::hex(&hasher.finalize())
        };
        let [drugs, classes, interactions, allergens, conditions, rules]: [(String, String); 6] =
            texts.try_into().map_err(|_| DataError {
                file: "guardrails".to_owned(),
                message: "the built-in list of files changed".to_owned(),
            })?;
        let drugs_file: DrugsFile = parse(&drugs.0, &drugs.1)?;
        let classes_file: ClassesFile = parse(&classes.0, &classes.1)?;
        let interactions_file: InteractionsFile = parse(&interactions.0, &interactions.1)?;
        let allergens_file: AllergensFile = parse(&allergens.0, &allergens.1)?;
        let conditions_file: ConditionsFile = parse(&conditions.0, &conditions.1)?;
        let rules_file: RulesFile = parse(&rules.0, &rules.1)?;
        let version = format!("{}+{}", rules_file.version, &digest[..12]);
        Self::check(
            drugs_file,
            classes_file,
            interactions_file,
            allergens_file,
            conditions_file,
            rules_file,
            version,
            [
                &drugs.0,
                &classes.0,
                &interactions.0,
                &allergens.0,
                &conditions.0,
                &rules.0,
            ],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        drugs: DrugsFile,
        classes: ClassesFile,
        interactions: InteractionsFile,
        allergens: AllergensFile,
        conditions: ConditionsFile,
        rules: RulesFile,
        version: String,
        files: [&String; 6],
    ) -> Result<Self, DataError> {
        let fault = |file: usize, message: String| DataError {
            file: files[file].clone(),
            message,
        };
        let class_by_id: HashMap<String, usize> = classes
            .class
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        if class_by_id.len() != classes.class.len() {
            return Err(fault(1, "two classes have the same id".into()));
        }
        let mut by_generic = HashMap::new();
        for (i, drug) in drugs.drug.iter().enumerate() {
            if by_generic.insert(drug.generic.clone(), i).is_some() {
                return Err(fault(0, format!("{} is listed twice", drug.generic)));
            }
            if let Some(class) = drug.classes.iter().find(|c| !class_by_id.contains_key(*c)) {
                return Err(fault(
                    0,
                    format!("{}: class {class} is not in classes.toml", drug.generic),
                ));
            }
            if let (Some(min), Some(max)) = (drug.daily_min, drug.daily_max)
                && (min <= 0.0 || max < min)
            {
                return Err(fault(0, format!("{}: daily_min/daily_max", drug.generic)));
            }
            if drug.daily_max.is_some() && (drug.unit.is_none() || drug.source.is_none()) {
                return Err(fault(
                    0,
                    format!("{}: a dose needs its unit and source", drug.generic),
                ));
            }
            if let Some(source) = &drug.source
                && !drugs.sources.contains_key(source)
            {
                return Err(fault(
                    0,
                    format!("{}: source {source} is not in [sources]", drug.generic),
                ));
            }
        }
        let known = |name: &str| match name.strip_prefix("class:") {
            Some(class) => class_by_id.contains_key(class),
            None => by_generic.contains_key(name),
        };
        for interaction in &interactions.interaction {
            if let Some(name) = interaction
                .a
                .iter()
                .chain(&interaction.b)
                .find(|n| !known(n))
            {
                return Err(fault(
                    2,
                    format!("{name} is neither a drug nor a class:<id>"),
                ));
            }
            if Severity::parse(&interaction.severity).is_none() {
                return Err(fault(2, format!("severity {}", interaction.severity)));
            }
        }
        for allergen in &allergens.allergen {
            if let Some(name) = allergen.conflicts.iter().find(|n| !known(n)) {
                return Err(fault(
                    3,
                    format!("{name} is neither a drug nor a class:<id>"),
                ));
            }
        }
        let mut weights = HashMap::new();
        for (name, weight) in &rules.score_weights {
            let severity = Severity::parse(name)
                .ok_or_else(|| fault(5, format!("score_weights: severity {name}")))?;
            weights.insert(severity, *weight);
        }
        for rule in &rules.rule {
            if !RULE_IDS.contains(&rule.id.as_str()) {
                return Err(fault(5, format!("unknown rule {}", rule.id)));
            }
            if Severity::parse(&rule.severity).is_none() {
                return Err(fault(5, format!("{}: severity {}", rule.id, rule.severity)));
            }
        }
        let antibiotic_class = *class_by_id
            .get(&rules.antibiotic_class)
            .ok_or_else(|| fault(5, format!("antibiotic_class {}", rules.antibiotic_class)))?;
        let sepsis_condition = conditions
            .condition
            .iter()
            .position(|c| c.id == rules.sepsis_condition)
            .ok_or_else(|| fault(5, format!("sepsis_condition {}", rules.sepsis_condition)))?;

        let mut phrases: HashMap<String, Vec<(Vec<String>, Term)>> = HashMap::new();
        let mut add = |phrase: &str, term: Term| {
            let keys = phrase_keys(phrase);
            if let Some(first) = keys.first() {
                phrases.entry(first.clone()).or_default().push((keys, term));
            }
        };
        for (i, drug) in drugs.drug.iter().enumerate() {
            add(&drug.generic, Term::Drug(i));
            for name in &drug.names {
                add(name, Term::Drug(i));
            }
        }
        for (i, class) in classes.class.iter().enumerate() {
            for name in &class.names {
                add(name, Term::Class(i));
            }
        }
        for (i, allergen) in allergens.allergen.iter().enumerate() {
            for name in &allergen.names {
                add(name, Term::Allergen(i));
            }
        }
        for (i, condition) in conditions.condition.iter().enumerate() {
            for name in &condition.names {
                add(name, Term::Condition(i));
            }
        }
        for list in phrases.values_mut() {
            list.sort_by_key(|(keys, _)| std::cmp::Reverse(keys.len()));
        }
        Ok(Self {
            drugs: drugs.drug,
            sources: drugs.sources,
            classes: classes.class,
            interactions: interactions.interaction,
            allergens: allergens.allergen,
            conditions: conditions.condition,
            rules: rules.rule,
            weights,
            antibiotic_class,
            sepsis_condition,
            version,
            by_generic,
            class_by_id,
            phrases,
        })
    }

    /// Every term whose phrase starts at `tokens[at]`, longest first, with
    /// the number of tokens each takes.
    pub fn terms_at(&self, tokens: &[Token], at: usize) -> Vec<(Term, usize)> {
        let Some(first) = tokens.get(at).and_then(token_key) else {
            return Vec::new();
        };
        let Some(candidates) = self.phrases.get(&first) else {
            return Vec::new();
        };
        candidates
            .iter()
            .filter(|(keys, _)| {
                keys.iter().enumerate().all(|(k, key)| {
                    tokens.get(at + k).and_then(token_key).as_deref() == Some(key.as_str())
                })
            })
            .map(|(keys, term)| (*term, keys.len()))
            .collect()
    }

    /// A drug by generic name or any other name it is said by.
    pub fn drug_named(&self, name: &str) -> Option<usize> {
        let tokens = tokenize(name);
        self.terms_at(&tokens, 0)
            .into_iter()
            .find_map(|(term, len)| match term {
                Term::Drug(i) if len == tokens.len() => Some(i),
                _ => None,
            })
    }

    /// An allergen, drug or class by any name it is said by, for a
    /// context's allergy list.
    pub fn allergen_term(&self, name: &str) -> Option<Term> {
        let tokens = tokenize(name);
        let whole: Vec<Term> = self
            .terms_at(&tokens, 0)
            .into_iter()
            .filter(|(_, len)| *len == tokens.len())
            .map(|(term, _)| term)
            .collect();
        // An allergen entry says most ("aspirin" the allergen rules out NSAIDs too).
        whole
            .iter()
            .find(|t| matches!(t, Term::Allergen(_)))
            .or_else(|| whole.iter().find(|t| matches!(t, Term::Class(_))))
            .or_else(|| whole.iter().find(|t| matches!(t, Term::Drug(_))))
            .copied()
    }

    /// Whether drug `drug` is `name` (a generic name or `class:<id>`).
    pub fn drug_is(&self, drug: usize, name: &str) -> bool {
        match name.strip_prefix("class:") {
            Some(class) => self.drugs[drug].classes.iter().any(|c| c == class),
            None => self.by_generic.get(name) == Some(&drug),
        }
    }

    /// Whether drug `drug` belongs to class `class` (an index).
    pub fn in_class(&self, drug: usize, class: usize) -> bool {
        self.drugs[drug].classes.contains(&self.classes[class].id)
    }

    /// A class's index by id.
    pub fn class(&self, id: &str) -> Option<usize> {
        self.class_by_id.get(id).copied()
    }

    /// A rule's entry, if it runs.
    pub fn rule(&self, id: &str) -> Option<&RuleEntry> {
        self.rules.iter().find(|r| r.id == id && r.enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_data_loads_and_cites_a_source_for_every_dose() {
        let lexicon = Lexicon::built_in().unwrap();
        assert!(lexicon.drugs.len() >= 200, "{} drugs", lexicon.drugs.len());
        for drug in &lexicon.drugs {
            if drug.daily_max.is_some() {
                assert!(drug.source.is_some(), "{}", drug.generic);
            }
        }
        let lipitor = lexicon.drug_named("Lipitor").unwrap();
        assert_eq!(lexicon.drugs[lipitor].generic, "atorvastatin");
        assert!(lexicon.drug_is(lipitor, "class:statin"));
        assert_eq!(lexicon.rules.len(), RULE_IDS.len());
        assert!(lexicon.version.contains('+'));
    }

    #[test]
    fn an_override_replaces_one_file_and_a_broken_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("conditions.toml"),
            "[[condition]]\nid = \"sepsis\"\nnames = [\"sepsis\", \"urosepsis\"]\n",
        )
        .unwrap();
        let lexicon = Lexicon::load(Some(dir.path())).unwrap();
        assert_eq!(lexicon.conditions.len(), 1);
        assert_ne!(lexicon.version, Lexicon::built_in().unwrap().version);

        std::fs::write(
            dir.path().join("interactions.toml"),
            "[[interaction]]\na = [\"warfarin\"]\nb = [\"unobtainium\"]\nseverity = \"critical\"\nmessage = \"m\"\nsource = \"s\"\n",
        )
        .unwrap();
        let err = Lexicon::load(Some(dir.path())).unwrap_err();
        assert!(err.file.ends_with("interactions.toml"), "{err}");
        assert!(err.message.contains("unobtainium"), "{err}");
    }
}
