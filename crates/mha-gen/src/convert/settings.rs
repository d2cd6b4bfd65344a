//! `--set [PREFIX]PARAM=VALUE`: constructor parameters the tensors cannot tell.

use std::collections::HashMap;

use mha_spec::{Literal, ParamType, Spec};

use super::ConvertError;

/// A constructor parameter given on the command line: `[PREFIX]PARAM=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The layer prefix it applies to (`layers.1.self_attn.`), or empty for every layer.
    pub prefix: String,
    /// The parameter's name.
    pub param: String,
    /// The value as written.
    pub value: String,
}

impl std::str::FromStr for Setting {
    type Err = String;

    /// Parses `num_heads=6` or `layers.1.self_attn.num_heads=4`.
    fn from_str(text: &str) -> Result<Setting, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected [PREFIX.]PARAM=VALUE, e.g. num_heads=6"))?;
        let (prefix, param) = match key.rfind('.') {
            Some(dot) => (&key[..=dot], &key[dot + 1..]),
            None => ("", key),
        };
        if param.is_empty() || value.is_empty() {
            return Err(format!(
                "`{text}`: expected [PREFIX.]PARAM=VALUE, e.g. num_heads=6"
            ));
        }
        Ok(Setting {
            prefix: prefix.to_string(),
            param: param.to_string(),
            value: value.to_string(),
        })
    }
}

/// `--set` values by prefix (`""` for every layer), parsed by the parameters' types.
pub(super) fn parse_settings(
    spec: &Spec,
    settings: &[Setting],
    layers: &[(String, Vec<String>)],
) -> Result<HashMap<String, HashMap<String, Literal>>, ConvertError> {
    let mut out: HashMap<String, HashMap<String, Literal>> = HashMap::new();
    for s in settings {
        let names = spec.signature.iter().map(|p| p.name.as_str());
        let param = spec.param(&s.param).ok_or_else(|| {
            ConvertError::Usage(format!(
                "--set {}{}={}: {} has no parameter `{}`{}",
                s.prefix,
                s.param,
                s.value,
                spec.op,
                s.param,
                mha_spec::did_you_mean(&s.param, names)
            ))
        })?;
        if !s.prefix.is_empty() && !layers.iter().any(|(p, _)| *p == s.prefix) {
            let prefixes: Vec<&str> = layers.iter().map(|(p, _)| p.as_str()).collect();
            return Err(ConvertError::Usage(format!(
                "--set {}{}: no {} layer has the prefix `{}`{}; the layers are: {}",
                s.prefix,
                s.param,
                spec.op,
                s.prefix,
                mha_spec::did_you_mean(&s.prefix, prefixes.iter().copied()),
                prefixes.join(", ")
            )));
        }
        let value = parse_value(param.ty, &s.value).ok_or_else(|| {
            ConvertError::Usage(format!(
                "--set {}{}={}: `{}` takes {}",
                s.prefix,
                s.param,
                s.value,
                s.param,
                match param.ty {
                    ParamType::Int => "a non-negative integer",
                    ParamType::OptionalInt => "a non-negative integer or null",
                    ParamType::Bool => "true or false",
                    ParamType::Float => "a number",
                }
            ))
        })?;
        out.entry(s.prefix.clone())
            .or_default()
            .insert(s.param.clone(), value);
    }
    Ok(out)
}

fn parse_value(ty: ParamType, text: &str) -> Option<Literal> {
    match ty {
        ParamType::Int => text.parse::<u32>().ok().map(|v| Literal::Int(v.into())),
        ParamType::OptionalInt if matches!(text, "null" | "none" | "None") => {
            Some(Literal::Null(()))
        }
        ParamType::OptionalInt => text.parse::<u32>().ok().map(|v| Literal::Int(v.into())),
        ParamType::Bool => match text {
            "true" | "True" => Some(Literal::Bool(true)),
            "false" | "False" => Some(Literal::Bool(false)),
            _ => None,
        },
        ParamType::Float => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Literal::Float),
    }
}
