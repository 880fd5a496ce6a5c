//! The engine registry (`mechanical_engines.json`, §5.6): which engines exist, what they may do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use steward_core::capability::CapabilityId;

use crate::gates::Gate;
use crate::op::{BudgetSpec, Determinism};

/// The registry Steward ships.
pub const BUILTIN: &str = include_str!("../mechanical_engines.json");

/// The type of one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// A JSON string.
    String,
    /// A JSON integer.
    Integer,
    /// A JSON number.
    Number,
    /// A JSON bool.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

impl ParamType {
    fn accepts(self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Integer => v.is_i64() || v.is_u64(),
            ParamType::Number => v.is_number(),
            ParamType::Boolean => v.is_boolean(),
            ParamType::Object => v.is_object(),
            ParamType::Array => v.is_array(),
        }
    }
}

/// The parameters an operation takes; anything else is refused.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsSchema {
    /// Parameters that must be present.
    #[serde(default)]
    pub required: Vec<String>,
    /// Every allowed parameter and its type.
    #[serde(default)]
    pub properties: BTreeMap<String, ParamType>,
}

impl ParamsSchema {
    /// Every way `params` breaks the schema.
    pub fn check(&self, params: &Value) -> Vec<String> {
        let Some(obj) = params.as_object() else {
            return vec!["params must be a JSON object".into()];
        };
        let mut errors: Vec<String> = self
            .required
            .iter()
            .filter(|k| !obj.contains_key(*k))
            .map(|k| format!("missing parameter `{k}`"))
            .collect();
        for (k, v) in obj {
            match self.properties.get(k) {
                None => errors.push(format!("unknown parameter `{k}`")),
                Some(t) if !t.accepts(v) => {
                    errors.push(format!("parameter `{k}` must be of type {t:?}").to_lowercase())
                }
                Some(_) => {}
            }
        }
        errors
    }
}

/// One operation of an engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationSpec {
    /// Its name, e.g. `exec`.
    pub name: String,
    /// The envelope version it accepts.
    pub schema_ref: String,
    /// Its parameters.
    #[serde(default)]
    pub params_schema: ParamsSchema,
    /// Capabilities the operation may request (axes cover their scopes).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// What it produces.
    #[serde(default)]
    pub output_types: Vec<String>,
}

/// One engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    /// Its id (the registry key).
    pub engine_id: String,
    /// Its version.
    #[serde(default = "default_version")]
    pub version: String,
    /// What implements it.
    #[serde(default)]
    pub implementation: String,
    /// The strongest determinism it can promise.
    pub determinism_ceiling: Determinism,
    /// Capabilities every operation of it may request.
    #[serde(default)]
    pub required_caps: Vec<String>,
    /// Gates that must pass (all six global gates, always).
    pub required_gates: Vec<String>,
    /// The most an operation may ask for.
    pub default_budget: BudgetSpec,
    /// Its operations.
    pub ops: Vec<OperationSpec>,
    /// An operator can switch an engine off.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_version() -> String {
    "0.0.0".into()
}

fn yes() -> bool {
    true
}

impl EngineSpec {
    /// The operation with this name.
    pub fn op(&self, name: &str) -> Option<&OperationSpec> {
        self.ops.iter().find(|o| o.name == name)
    }
}

/// A registry that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("engine registry {source_name}: {problems}")]
pub struct RegistryError {
    /// Which file.
    pub source_name: String,
    /// What is wrong, `; `-separated.
    pub problems: String,
}

/// Engines by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineRegistry {
    engines: BTreeMap<String, EngineSpec>,
}

impl EngineRegistry {
    /// The shipped registry.
    pub fn builtin() -> Result<EngineRegistry, RegistryError> {
        EngineRegistry::default().overlay("built-in mechanical_engines.json", BUILTIN)
    }

    /// Adds or replaces engines from a `mechanical_engines.json`-shaped text;
    /// an entry with `"enabled": false` switches an engine off.
    pub fn overlay(mut self, source_name: &str, text: &str) -> Result<EngineRegistry, RegistryError> {
        let err = |problems: String| RegistryError { source_name: source_name.to_owned(), problems };
        let entries: BTreeMap<String, EngineSpec> = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let mut problems = Vec::new();
        for (key, spec) in &entries {
            if key != &spec.engine_id {
                problems.push(format!("key `{key}` does not match engine_id `{}`", spec.engine_id));
            }
            for gate in Gate::ALL {
                if !spec.required_gates.iter().any(|g| g == gate.name()) {
                    problems.push(format!("engine `{key}` must require {}", gate.name()));
                }
            }
            for g in &spec.required_gates {
                if Gate::from_name(g).is_none() {
                    problems.push(format!("engine `{key}`: unknown gate `{g}`"));
                }
            }
            let caps = spec.required_caps.iter().chain(spec.ops.iter().flat_map(|o| o.capabilities.iter()));
            for cap in caps {
                if let Err(e) = CapabilityId::parse(cap) {
                    problems.push(format!("engine `{key}`: {e}"));
                }
            }
            for op in &spec.ops {
                for r in &op.params_schema.required {
                    if !op.params_schema.properties.contains_key(r) {
                        problems.push(format!("engine `{key}` op `{}`: required parameter `{r}` has no type", op.name));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(err(problems.join("; ")));
        }
        self.engines.extend(entries);
        Ok(self)
    }

    /// An enabled engine.
    pub fn engine(&self, id: &str) -> Option<&EngineSpec> {
        self.engines.get(id).filter(|e| e.enabled)
    }

    /// Every engine, enabled or not.
    pub fn engines(&self) -> impl Iterator<Item = &EngineSpec> {
        self.engines.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_registry_ships_the_shell_engine() {
        let r = EngineRegistry::builtin().unwrap();
        let shell = r.engine("engine.shell").unwrap();
        assert_eq!(shell.determinism_ceiling, Determinism::D1);
        assert_eq!(shell.required_gates.len(), 6);
        assert!(shell.op("exec").is_some());
        assert!(shell.default_budget.wall_time_ms.is_some());
    }

    #[test]
    fn operators_can_restrict_and_bad_registries_are_refused() {
        let r = EngineRegistry::builtin().unwrap();
        let mut off: serde_json::Value = serde_json::from_str(BUILTIN).unwrap();
        off["engine.shell"]["enabled"] = false.into();
        let r = r.overlay("ops.json", &off.to_string()).unwrap();
        assert!(r.engine("engine.shell").is_none());

        let mut bad: serde_json::Value = serde_json::from_str(BUILTIN).unwrap();
        bad["engine.shell"]["required_gates"] = serde_json::json!(["G-SCHEMA"]);
        bad["engine.shell"]["required_caps"] = serde_json::json!(["magic.wand"]);
        let err = EngineRegistry::default().overlay("bad.json", &bad.to_string()).unwrap_err().to_string();
        assert!(err.contains("must require G-CAP"), "{err}");
        assert!(err.contains("HSK-4001"), "{err}");
        assert!(
            EngineRegistry::default()
                .overlay("x.json", "{")
                .unwrap_err()
                .to_string()
                .starts_with("engine registry x.json:")
        );
    }

    #[test]
    fn params_are_checked_against_the_schema() {
        let r = EngineRegistry::builtin().unwrap();
        let schema = &r.engine("engine.shell").unwrap().op("exec").unwrap().params_schema;
        assert!(schema.check(&serde_json::json!({"command": "ls", "cwd": "."})).is_empty());
        assert_eq!(
            schema.check(&serde_json::json!({"cwd": 3, "shell": "bash"})),
            ["missing parameter `command`", "parameter `cwd` must be of type string", "unknown parameter `shell`"]
        );
    }
}
