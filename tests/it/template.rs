//! The deployment template (`template.yaml`) checked against the binary it
//! deploys: the environment it sets is what `scim_relay::core::config` reads (and
//! parses), the token rule only matches AWSCURRENT on the target secrets, the
//! IAM role covers exactly the target secrets, the client-secret secret, the
//! alert topic and the optional KMS key, the alarms and the dashboard watch
//! metrics the binary really emits (with this stack's FunctionName), and
//! failed or undeliverable events end where the admin sees them.
//!
//! The template is evaluated here with a small interpreter for the intrinsic
//! functions it uses (Ref, Sub, Join, Split, Select, If, Equals, Not,
//! FindInMap, GetAtt), for several parameter sets. Both branches of every
//! Fn::If are evaluated, so a Fn::Select that would be out of range in the
//! branch not taken fails here too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use scim_relay::core::config::{Defaults, ENV_CONCURRENCY, ENV_GRAPH_ENDPOINT, ENV_LOGIN_ENDPOINT, ENV_VARS};
use scim_relay::core::renew::{Outcome, TargetResult};
use scim_relay::lambda::handler::{decode, Decoded};
use scim_relay::lambda::relay::{RunReport, Targets};
use serde_json::{json, Map, Value as Json};
use serde_norway::Value as Yaml;

const PARTITION: &str = "aws";
const REGION: &str = "eu-west-1";
const ACCOUNT: &str = "123456789012";
const STACK: &str = "scim-relay";
const GUID: &str = "11111111-2222-3333-4444-555555555555";
const SP: &str = "99999999-8888-7777-6666-555555555555";
const KMS_KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d";

/// Variables the binary reads that the template deliberately leaves unset:
/// the Graph and login endpoints are overrides for tests and the demo (the
/// defaults are the real Microsoft endpoints), and the per-invocation target
/// concurrency's default (4) suits any deployment. Everything else in
/// `ENV_VARS` must be set by the template.
const NOT_SET_BY_TEMPLATE: &[&str] = &[ENV_GRAPH_ENDPOINT, ENV_LOGIN_ENDPOINT, ENV_CONCURRENCY];

/// The Secrets Manager actions the function calls on a token secret (src/aws.rs).
/// What the function may do on its own Graph credential secret.
const CREDENTIAL_ACTIONS: [&str; 3] =
    ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:TagResource"];
const TOKEN_ACTIONS: &[&str] = &[
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:TagResource",
];

/// How many token secrets the template can grant access to (its slots).
const MAX_TOKEN_SECRETS: usize = 10;

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

fn raw_template() -> Yaml {
    let text = std::fs::read_to_string(format!("{}/template.yaml", root())).expect("template.yaml exists");
    serde_norway::from_str(&text).expect("template.yaml is valid YAML")
}

// ---------------------------------------------------------- evaluator --

/// One evaluation of the template for a set of parameter values.
struct Stack {
    raw: Yaml,
    params: BTreeMap<String, Json>,
    resource_types: BTreeMap<String, String>,
}

type Eval = Result<Option<Json>, String>;

impl Stack {
    /// The template with its parameter defaults, overridden by `overrides`
    /// (a CommaDelimitedList is given as a JSON array).
    fn new(overrides: &[(&str, Json)]) -> Self {
        let raw = raw_template();
        let mut params = BTreeMap::new();
        for (name, p) in mapping(&raw["Parameters"]) {
            let list = p["Type"].as_str() == Some("CommaDelimitedList");
            if let Some(default) = p.get("Default") {
                let s = scalar(default);
                let v = if list { json!(s.split(',').map(str::trim).collect::<Vec<_>>()) } else { json!(s) };
                params.insert(name, v);
            }
        }
        for (k, v) in overrides {
            assert!(raw["Parameters"].get(*k).is_some(), "no parameter {k} in the template");
            params.insert((*k).to_owned(), v.clone());
        }
        for (name, _) in mapping(&raw["Parameters"]) {
            assert!(params.contains_key(&name), "parameter {name} has no default and no test value");
        }
        let resource_types = mapping(&raw["Resources"]).into_iter().map(|(k, r)| (k, scalar(&r["Type"]))).collect();
        Self { raw, params, resource_types }
    }

    /// A deployment with every required parameter set and `names` as the
    /// token secrets.
    fn with_targets(names: &[&str], extra: &[(&str, Json)]) -> Self {
        let mut o: Vec<(&str, Json)> = vec![
            ("TokenSecretNames", json!(names)),
            ("EntraTenantId", json!(GUID)),
            ("EntraClientId", json!(GUID)),
            ("EntraServicePrincipalId", json!(SP)),
        ];
        o.extend(extra.iter().cloned());
        Self::new(&o)
    }

    fn resource(&self, id: &str) -> Json {
        let r = self.raw["Resources"].get(id).unwrap_or_else(|| panic!("no resource {id}"));
        self.eval(r).unwrap_or_else(|e| panic!("evaluating {id}: {e}")).expect("resource has a value")
    }

    /// The resources of a type that this deployment creates (their
    /// `Condition`, if any, holds).
    fn resources_of_type(&self, ty: &str) -> Vec<(String, Json)> {
        self.resource_types
            .iter()
            .filter(|(_, t)| *t == ty)
            .filter(|(id, _)| self.exists(id))
            .map(|(id, _)| (id.clone(), self.resource(id)))
            .collect()
    }

    /// Whether the deployment creates resource `id` (its `Condition` holds).
    fn exists(&self, id: &str) -> bool {
        match self.raw["Resources"][id].get("Condition").and_then(Yaml::as_str) {
            Some(c) => self.condition(c).unwrap_or_else(|e| panic!("{id}: {e}")),
            None => true,
        }
    }

    fn condition(&self, name: &str) -> Result<bool, String> {
        let c = self.raw["Conditions"].get(name).ok_or_else(|| format!("no condition {name}"))?;
        match self.eval(c)? {
            Some(Json::Bool(b)) => Ok(b),
            other => Err(format!("condition {name} is not a boolean: {other:?}")),
        }
    }

    fn reference(&self, name: &str) -> Eval {
        Ok(Some(match name {
            "AWS::Partition" => json!(PARTITION),
            "AWS::Region" => json!(REGION),
            "AWS::AccountId" => json!(ACCOUNT),
            "AWS::StackName" => json!(STACK),
            "AWS::URLSuffix" => json!("amazonaws.com"),
            "AWS::NoValue" => return Ok(None),
            _ => {
                if let Some(v) = self.params.get(name) {
                    v.clone()
                } else if let Some(ty) = self.resource_types.get(name) {
                    json!(match ty.as_str() {
                        "AWS::SNS::Topic" => format!("arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{STACK}-{name}-ABC123"),
                        "AWS::SQS::Queue" => {
                            // A queue without a QueueName gets a generated one.
                            let given = &self.raw["Resources"][name]["Properties"]["QueueName"];
                            let queue = match given {
                                Yaml::Null => format!("{STACK}-{name}-ABC123"),
                                _ => self.string(given, name)?,
                            };
                            format!("https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{queue}")
                        }
                        _ => format!("{STACK}-{name}"),
                    })
                } else {
                    return Err(format!("Ref to unknown {name}"));
                }
            }
        }))
    }

    fn get_att(&self, id: &str, attr: &str) -> Eval {
        if !self.resource_types.contains_key(id) {
            return Err(format!("GetAtt on unknown resource {id}"));
        }
        Ok(Some(json!(format!("getatt:{id}.{attr}"))))
    }

    fn string(&self, v: &Yaml, what: &str) -> Result<String, String> {
        match self.eval(v)? {
            Some(Json::String(s)) => Ok(s),
            Some(Json::Number(n)) => Ok(n.to_string()),
            other => Err(format!("{what}: expected a string, got {other:?}")),
        }
    }

    fn list(&self, v: &Yaml, what: &str) -> Result<Vec<Json>, String> {
        match self.eval(v)? {
            Some(Json::Array(a)) => Ok(a),
            other => Err(format!("{what}: expected a list, got {other:?}")),
        }
    }

    fn sub(&self, template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or("unclosed ${ in Fn::Sub")? + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(v);
            } else {
                let v = match name.split_once('.') {
                    Some((id, attr)) if !name.starts_with("AWS::") => self.get_att(id, attr)?,
                    _ => self.reference(name)?,
                };
                match v {
                    Some(Json::String(s)) => out.push_str(&s),
                    other => return Err(format!("${{{name}}} in Fn::Sub is not a string: {other:?}")),
                }
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn function(&self, name: &str, arg: &Yaml) -> Eval {
        let args = || arg.as_sequence().cloned().ok_or_else(|| format!("Fn::{name} takes a list"));
        match name {
            "Ref" => self.reference(&scalar(arg)),
            "GetAtt" => match arg {
                Yaml::String(s) => {
                    let (id, attr) = s.split_once('.').ok_or("GetAtt needs Resource.Attribute")?;
                    self.get_att(id, attr)
                }
                _ => {
                    let a = args()?;
                    self.get_att(&scalar(&a[0]), &scalar(&a[1]))
                }
            },
            "Sub" => {
                let (template, vars) = match arg {
                    Yaml::String(s) => (s.clone(), BTreeMap::new()),
                    _ => {
                        let a = args()?;
                        let template = a[0].as_str().ok_or("Fn::Sub's template must be a literal string")?.to_owned();
                        let mut vars = BTreeMap::new();
                        for (k, v) in mapping(&a[1]) {
                            vars.insert(k.clone(), self.string(&v, &format!("Fn::Sub variable {k}"))?);
                        }
                        (template, vars)
                    }
                };
                Ok(Some(json!(self.sub(&template, &vars)?)))
            }
            "Join" => {
                let a = args()?;
                let delim = a[0].as_str().ok_or("Fn::Join's delimiter must be a literal string")?;
                let parts: Vec<String> = self
                    .list(&a[1], "Fn::Join")?
                    .iter()
                    .map(|p| match p {
                        Json::String(s) => Ok(s.clone()),
                        Json::Number(n) => Ok(n.to_string()),
                        other => Err(format!("Fn::Join of a non-string {other}")),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Some(json!(parts.join(delim))))
            }
            "Split" => {
                let a = args()?;
                let delim = a[0].as_str().ok_or("Fn::Split's delimiter must be a literal string")?;
                let s = self.string(&a[1], "Fn::Split")?;
                Ok(Some(json!(s.split(delim).collect::<Vec<_>>())))
            }
            "Select" => {
                let a = args()?;
                let i: usize = self.string(&a[0], "Fn::Select index")?.parse().map_err(|_| "bad Fn::Select index")?;
                let list = self.list(&a[1], "Fn::Select")?;
                list.get(i).cloned().map(Some).ok_or_else(|| {
                    format!(
                        "Fn::Select index {i} out of range for a list of {} (CloudFormation fails here)",
                        list.len()
                    )
                })
            }
            "If" => {
                let a = args()?;
                let cond = self.condition(&scalar(&a[0]))?;
                let (yes, no) = (self.eval(&a[1])?, self.eval(&a[2])?);
                Ok(if cond { yes } else { no })
            }
            "Equals" => {
                let a = args()?;
                Ok(Some(json!(self.eval(&a[0])? == self.eval(&a[1])?)))
            }
            "Not" => {
                let a = args()?;
                match self.eval(&a[0])? {
                    Some(Json::Bool(b)) => Ok(Some(json!(!b))),
                    other => Err(format!("Fn::Not of {other:?}")),
                }
            }
            "Condition" => Ok(Some(json!(self.condition(&scalar(arg))?))),
            "FindInMap" => {
                let a = args()?;
                let map = scalar(&a[0]);
                let (k1, k2) = (self.string(&a[1], "FindInMap key")?, self.string(&a[2], "FindInMap key")?);
                let v = self.raw["Mappings"][map.as_str()]
                    .get(k1.as_str())
                    .and_then(|m| m.get(k2.as_str()))
                    .ok_or_else(|| format!("no {map}.{k1}.{k2} in Mappings"))?;
                self.eval(v)
            }
            other => Err(format!("the test's evaluator does not know Fn::{other}")),
        }
    }

    /// Evaluates a template fragment; `None` is AWS::NoValue.
    fn eval(&self, v: &Yaml) -> Eval {
        Ok(Some(match v {
            Yaml::Null => Json::Null,
            Yaml::Bool(b) => json!(b),
            Yaml::Number(n) => {
                if let Some(i) = n.as_i64() {
                    json!(i)
                } else {
                    json!(n.as_f64())
                }
            }
            Yaml::String(s) => json!(s),
            Yaml::Sequence(items) => {
                let mut out = Vec::new();
                for item in items {
                    if let Some(x) = self.eval(item)? {
                        out.push(x);
                    }
                }
                Json::Array(out)
            }
            Yaml::Mapping(m) => {
                if m.len() == 1 {
                    let (k, arg) = m.iter().next().expect("one entry");
                    if let Some(k) = k.as_str() {
                        if k == "Ref" || (k == "Condition" && !arg.is_mapping()) {
                            return self.function(k, arg);
                        }
                        if let Some(f) = k.strip_prefix("Fn::") {
                            return self.function(f, arg);
                        }
                    }
                }
                let mut out = Map::new();
                for (k, val) in m {
                    if let Some(x) = self.eval(val)? {
                        out.insert(scalar(k), x);
                    }
                }
                Json::Object(out)
            }
            Yaml::Tagged(t) => {
                let tag = t.tag.to_string();
                return self.function(tag.trim_start_matches('!'), &t.value);
            }
        }))
    }
}

fn mapping(v: &Yaml) -> Vec<(String, Yaml)> {
    v.as_mapping().map(|m| m.iter().map(|(k, v)| (scalar(k), v.clone())).collect()).unwrap_or_default()
}

fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn strings(v: &Json) -> Vec<String> {
    match v {
        Json::String(s) => vec![s.clone()],
        Json::Array(a) => a.iter().map(|x| x.as_str().expect("a string").to_owned()).collect(),
        other => panic!("expected a string or a list of strings, got {other}"),
    }
}

fn secret_arn_pattern(name: &str) -> String {
    format!("arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-??????")
}

/// IAM's ARN matching: `*` any run of characters, `?` exactly one.
fn iam_matches(pattern: &str, arn: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((&'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((&'?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(&pattern.chars().collect::<Vec<_>>(), &arn.chars().collect::<Vec<_>>())
}

fn function(stack: &Stack) -> Json {
    let fns = stack.resources_of_type("AWS::Serverless::Function");
    assert_eq!(fns.len(), 1, "the template deploys exactly one function");
    fns.into_iter().next().expect("one").1
}

fn env_of(stack: &Stack) -> HashMap<String, String> {
    let f = function(stack);
    f["Properties"]["Environment"]["Variables"]
        .as_object()
        .expect("Environment.Variables")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                other => panic!("{k} is not a string: {other}"),
            };
            (k.clone(), v)
        })
        .collect()
}

/// Every statement of the function role's policies.
fn role_statements(stack: &Stack) -> Vec<Json> {
    let f = function(stack);
    let role_ref = f["Properties"]["Role"].as_str().expect("the function names its role").to_owned();
    let role_id = role_ref
        .strip_prefix("getatt:")
        .and_then(|r| r.strip_suffix(".Arn"))
        .expect("Role: !GetAtt <Role>.Arn, a role of this template");
    let role = stack.resource(role_id);
    assert_eq!(role["Type"], "AWS::IAM::Role");
    assert!(role["Properties"].get("ManagedPolicyArns").is_none(), "no managed policies: they grant `*` resources");
    let mut out = Vec::new();
    for p in role["Properties"]["Policies"].as_array().expect("inline policies") {
        match &p["PolicyDocument"]["Statement"] {
            Json::Array(s) => out.extend(s.iter().cloned()),
            s => out.push(s.clone()),
        }
    }
    assert!(f["Properties"].get("Policies").is_none(), "SAM Policies would add a second role policy");
    // Policies attached to the role as resources of their own (when created).
    let role_name = stack.reference(role_id).unwrap().unwrap();
    for (_, p) in stack.resources_of_type("AWS::IAM::RolePolicy") {
        if p["Properties"]["RoleName"] == role_name {
            match &p["Properties"]["PolicyDocument"]["Statement"] {
                Json::Array(s) => out.extend(s.iter().cloned()),
                s => out.push(s.clone()),
            }
        }
    }
    out
}

/// A number parameter reaches properties as a string, a literal as a number.
fn scalar_json(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other}"),
    }
}

fn actions(st: &Json) -> BTreeSet<String> {
    strings(&st["Action"]).into_iter().collect()
}

// ------------------------------------------------------------- tests --

#[test]
fn environment_is_exactly_what_the_binary_reads_and_parses() {
    let names = ["scim-relay/abm", "scim-relay/asm"];
    let stack = Stack::with_targets(&names, &[("EntraJobId", json!("Apple.0a1b2c3d.9f8e7d6c"))]);
    let env = env_of(&stack);
    for k in env.keys() {
        assert!(ENV_VARS.contains(&k.as_str()), "the template sets {k}, which the binary never reads");
    }
    for k in ENV_VARS {
        if NOT_SET_BY_TEMPLATE.contains(k) {
            assert!(!env.contains_key(*k), "{k} is a test-only override; the template should leave it unset");
        } else {
            assert!(
                env.contains_key(*k),
                "the binary reads {k} but template.yaml does not set it: add a parameter for it (and the IAM \
                 access it needs), or list it in NOT_SET_BY_TEMPLATE with the reason"
            );
        }
    }
    // The binary accepts the environment as deployed, for every target.
    let defaults = Defaults::from_vars(&env).expect("the template's environment parses");
    let ids: Vec<&str> = defaults.secret_ids.iter().map(|s| s.as_str()).collect();
    assert_eq!(ids, names);
    for id in &defaults.secret_ids {
        let t = defaults.for_target(id).expect("every target is fully configured");
        assert_eq!(t.tenant_url.as_str(), "https://federation.apple.com/feeds/business/scim");
        assert_eq!((t.warning_days, t.job_id.as_deref()), (30, Some("Apple.0a1b2c3d.9f8e7d6c")));
    }
    assert!(!defaults.dry_run);
    assert!(defaults.alert_topic_arn.is_some());

    // The optional job ID left empty means "the app's only job" (empty is unset).
    let env = env_of(&Stack::with_targets(&names, &[]));
    assert_eq!(env["ENTRA_JOB_ID"], "");
    let d = Defaults::from_vars(&env).expect("parses");
    assert_eq!(d.for_target(&d.secret_ids[0]).expect("configured").job_id, None);

    // The other parameters reach the binary as the values it accepts.
    let env = env_of(&Stack::with_targets(
        &names,
        &[
            ("ScimTenantUrl", json!("https://federation.apple.com/feeds/school/scim")),
            ("ExpiryWarningDays", json!("14")),
            ("DryRun", json!("true")),
        ],
    ));
    let d = Defaults::from_vars(&env).expect("parses");
    let t = d.for_target(&d.secret_ids[1]).expect("configured");
    assert_eq!((t.tenant_url.as_str(), t.warning_days), ("https://federation.apple.com/feeds/school/scim", 14));
    assert!(d.dry_run);
}

#[test]
fn token_rule_matches_only_awscurrent_on_the_target_secrets() {
    let names = ["scim-relay/abm", "scim-relay/asm"];
    let stack = Stack::with_targets(&names, &[]);
    let f = function(&stack);
    let events = f["Properties"]["Events"].as_object().expect("Events");
    let rules: Vec<&Json> = events.values().filter(|e| e["Type"] != "ScheduleV2").collect();
    assert_eq!(rules.len(), 1, "one event rule besides the schedule: {events:?}");
    assert_eq!(rules[0]["Type"], "EventBridgeRule");
    let pattern = &rules[0]["Properties"]["Pattern"];
    assert_eq!(
        pattern,
        &json!({
            "source": ["aws.secretsmanager"],
            "detail-type": ["Secret Label Updated"],
            "detail": {"name": names, "labelUpdated": ["AWSCURRENT"]},
        }),
        "the rule must match AWSCURRENT moves on the target secrets and nothing else"
    );
    // No other rule in the template (e.g. a CloudTrail one) can invoke the function.
    assert!(stack.resources_of_type("AWS::Events::Rule").is_empty());

    // Each event the rule lets through runs a sync of exactly that target.
    let env = env_of(&stack);
    let defaults = Defaults::from_vars(&env).expect("parses");
    for name in names {
        let event = json!({
            "version": "0", "id": "6a7e8feb-0000", "detail-type": "Secret Label Updated",
            "source": "aws.secretsmanager", "account": ACCOUNT, "time": "2026-11-23T06:00:00Z", "region": REGION,
            "resources": [format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-a1b2c3")],
            "detail": {"name": name, "labelUpdated": "AWSCURRENT", "versionId": "a1b2c3d4"},
        });
        match decode(&event, &defaults).expect("decodes") {
            Decoded::Run(req) => match req.targets {
                Targets::One(id) => assert_eq!(id.as_str(), name),
                other => panic!("expected one target, got {other:?}"),
            },
            other => panic!("expected a run, got {other:?}"),
        }
    }

    // The schedule sends Scheduler's default event, which syncs every target.
    let schedule = events.values().find(|e| e["Type"] == "ScheduleV2").expect("a ScheduleV2 event");
    assert!(schedule["Properties"].get("Input").is_none(), "no Input: Scheduler sends its aws.scheduler event");
    let tick = json!({"version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.scheduler",
        "account": ACCOUNT, "time": "2026-11-23T06:00:00Z", "region": REGION, "resources": [], "detail": "{}"});
    match decode(&tick, &defaults).expect("decodes") {
        Decoded::Run(req) => assert!(matches!(req.targets, Targets::All)),
        other => panic!("expected a run, got {other:?}"),
    }
}

#[test]
fn iam_covers_the_target_secrets_and_nothing_more() {
    let all: Vec<String> = (1..=MAX_TOKEN_SECRETS + 1).map(|i| format!("scim-relay/tenant-{i}")).collect();
    for (count, kms) in [(1, false), (2, true), (3, false), (MAX_TOKEN_SECRETS, true)] {
        let names: Vec<&str> = all[..count].iter().map(String::as_str).collect();
        let mut extra = vec![("GraphClientSecretName", json!("scim-relay/graph"))];
        if kms {
            extra.push(("SecretsKmsKeyArn", json!(KMS_KEY)));
        }
        let stack = Stack::with_targets(&names, &extra);
        let statements = role_statements(&stack);
        let ctx = format!("with {count} token secret(s), KMS key {kms}");

        let mut token_statements = 0;
        let mut client_secret_statements = 0;
        for st in &statements {
            assert_eq!(st["Effect"], "Allow", "{ctx}: {st}");
            assert!(st.get("NotResource").is_none() && st.get("NotAction").is_none(), "{ctx}: {st}");
            let resources = strings(&st["Resource"]);
            for r in &resources {
                assert!(!r.contains('*'), "{ctx}: wildcard resource {r}");
            }
            let acts = actions(st);
            for a in &acts {
                assert!(!a.contains('*'), "{ctx}: wildcard action {a}");
            }
            let sm: BTreeSet<&String> = acts.iter().filter(|a| a.starts_with("secretsmanager:")).collect();
            if sm.is_empty() {
                continue;
            }
            assert_eq!(sm.len(), acts.len(), "{ctx}: Secrets Manager actions share a statement with others: {st}");
            let resources: BTreeSet<String> = resources.into_iter().collect();
            if st["Sid"] == "ManageTokenSecrets" {
                token_statements += 1;
                let want: BTreeSet<String> = TOKEN_ACTIONS.iter().map(|s| s.to_string()).collect();
                assert_eq!(acts, want, "{ctx}: token secret actions");
                let want: BTreeSet<String> = names.iter().map(|n| secret_arn_pattern(n)).collect();
                assert_eq!(resources, want, "{ctx}: the token statement must name exactly the target secrets");
            } else {
                client_secret_statements += 1;
                assert_eq!(st["Sid"], "ReadGraphCredential", "{ctx}: {st}");
                assert_eq!(acts, CREDENTIAL_ACTIONS.iter().map(|a| a.to_string()).collect(), "{ctx}");
                assert_eq!(resources, BTreeSet::from([secret_arn_pattern("scim-relay/graph")]), "{ctx}");
            }
        }
        assert_eq!((token_statements, client_secret_statements), (1, 1), "{ctx}");

        let with = |action: &str| -> Vec<&Json> {
            statements.iter().filter(|s| actions(s).iter().any(|a| a == action)).collect()
        };
        let publish = with("sns:Publish");
        assert_eq!(publish.len(), 1, "{ctx}");
        let topic = stack.reference("AlertTopic").unwrap().unwrap();
        assert_eq!(strings(&publish[0]["Resource"]), [topic.as_str().unwrap()], "{ctx}: publish to its own topic");
        let decrypt = with("kms:Decrypt");
        if kms {
            assert_eq!(decrypt.len(), 1, "{ctx}");
            assert_eq!(strings(&decrypt[0]["Resource"]), [KMS_KEY]);
            assert_eq!(
                decrypt[0]["Condition"]["StringEquals"]["kms:ViaService"],
                format!("secretsmanager.{REGION}.amazonaws.com")
            );
        } else {
            assert!(decrypt.is_empty(), "{ctx}: kms:Decrypt without a customer-managed key");
        }
        let logs = with("logs:PutLogEvents");
        assert_eq!(strings(&logs[0]["Resource"]), ["getatt:LogGroup.Arn"], "{ctx}: logs only to its own group");
        let known = ["secretsmanager:", "sns:Publish", "kms:Decrypt", "logs:CreateLogStream", "logs:PutLogEvents"];
        for st in &statements {
            for a in actions(st) {
                assert!(known.iter().any(|k| a.starts_with(k)), "{ctx}: unexpected action {a}");
            }
        }
    }

    // Each ARN pattern matches its own secret (any suffix) and no other name.
    let arn = |name: &str, suffix: &str| format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-{suffix}");
    let p = secret_arn_pattern("scim-relay/abm");
    assert!(iam_matches(&p, &arn("scim-relay/abm", "Ab12Cd")));
    for other in ["scim-relay/abm-old", "scim-relay/ab", "scim-relay/abmx", "scim-relay/abm/x", "x/scim-relay/abm"] {
        assert!(!iam_matches(&p, &arn(other, "Ab12Cd")), "{p} must not match {other}");
    }
    assert!(!iam_matches(&p, &arn("scim-relay/abm", "Ab12Cd").replace(ACCOUNT, "210987654321")));

    // The template says how many token secrets it can grant.
    let raw = raw_template();
    let desc = scalar(&raw["Parameters"]["TokenSecretNames"]["Description"]);
    assert!(desc.contains(&format!("at most {MAX_TOKEN_SECRETS}")), "{desc}");
    let stack = Stack::with_targets(&all.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let granted = role_statements(&stack)
        .iter()
        .filter(|s| s["Sid"] == "ManageTokenSecrets")
        .flat_map(|s| strings(&s["Resource"]))
        .count();
    assert_eq!(granted, MAX_TOKEN_SECRETS);
}

#[test]
fn tagging_is_limited_to_the_status_tags_the_function_writes() {
    // Every `pub const TAG_…` of src/core/renew.rs: the tags the function writes.
    let src = std::fs::read_to_string(format!("{}/src/core/renew.rs", root())).expect("src/core/renew.rs");
    let written: BTreeSet<String> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const TAG_"))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_owned)
        .collect();
    assert!(written.len() >= 4, "found the tag constants: {written:?}");
    let stack = Stack::with_targets(&["scim-relay/abm"], &[]);
    let statements = role_statements(&stack);
    let st = statements.iter().find(|s| s["Sid"] == "ManageTokenSecrets").expect("ManageTokenSecrets");
    let allowed: BTreeSet<String> =
        strings(&st["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]).into_iter().collect();
    assert_eq!(allowed, written, "the TagResource condition must list exactly the tags src/core/renew.rs writes");
    for config_tag in scim_relay::core::config::LEGACY_SETTING_TAGS {
        assert!(!allowed.contains(*config_tag), "the function must not be able to write {config_tag}");
    }
    // On its own credential secret, only the two credential-watch tags.
    let st = statements.iter().find(|s| s["Sid"] == "ReadGraphCredential").expect("ReadGraphCredential");
    let allowed: BTreeSet<String> =
        strings(&st["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]).into_iter().collect();
    let watch: BTreeSet<String> = [
        scim_relay::core::credential_watch::TAG_CREDENTIAL_EXPIRY_WARNED,
        scim_relay::core::credential_watch::TAG_CREDENTIAL_EXPIRED_ALERTED,
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    assert_eq!(allowed, watch);
}

/// Each sign-in method gets exactly its own access: the client secret, the
/// certificate secret, or STS tokens for the configured audience only.
#[test]
fn graph_sign_in_access_follows_the_chosen_method() {
    let names = ["scim-relay/abm"];
    let base = [
        ("GraphClientSecretName", json!("scim-relay/graph")),
        ("GraphCertificateSecretName", json!("scim-relay/cert")),
    ];
    for (method, want_secret) in
        [("secret", Some("scim-relay/graph")), ("certificate", Some("scim-relay/cert")), ("federated", None)]
    {
        let mut extra = base.to_vec();
        extra.push(("EntraAuth", json!(method)));
        let stack = Stack::with_targets(&names, &extra);
        let statements = role_statements(&stack);
        let cred: Vec<&Json> = statements.iter().filter(|s| s["Sid"] == "ReadGraphCredential").collect();
        let sts: Vec<&Json> = statements.iter().filter(|s| actions(s).contains("sts:GetWebIdentityToken")).collect();
        match want_secret {
            Some(name) => {
                assert_eq!(cred.len(), 1, "{method}");
                assert_eq!(strings(&cred[0]["Resource"]), [secret_arn_pattern(name)], "{method}");
                assert!(sts.is_empty(), "{method}: sts:GetWebIdentityToken only for federated");
            }
            None => {
                assert!(cred.is_empty(), "federated stores nothing to read");
                assert_eq!(sts.len(), 1);
                assert_eq!(actions(sts[0]), BTreeSet::from(["sts:GetWebIdentityToken".to_owned()]));
                let aud = strings(&sts[0]["Condition"]["ForAllValues:StringEquals"]["sts:IdentityTokenAudience"]);
                assert_eq!(aud, ["api://AzureADTokenExchange"]);
                assert_eq!(sts[0]["Condition"]["Null"]["sts:IdentityTokenAudience"], "false");
            }
        }
        // The environment names only the chosen method's secret, and parses.
        let env = env_of(&stack);
        assert_eq!(env["ENTRA_AUTH"], method);
        assert_eq!(env["ENTRA_CLIENT_SECRET_ID"].is_empty(), method != "secret", "{method}");
        assert_eq!(env["ENTRA_CERTIFICATE_SECRET_ID"].is_empty(), method != "certificate", "{method}");
        let d = Defaults::from_vars(&env).expect("parses");
        d.for_target(&d.secret_ids[0]).expect("configured for every method");
    }
}

#[test]
fn no_wildcard_resource_anywhere() {
    // AWS allows a narrower resource for every action the stack grants but
    // two: sts:GetWebIdentityToken and secretsmanager:ListSecrets have no
    // resource type. So `Resource: "*"` may appear only on those actions
    // alone: the first narrowed by the token audience, the second granted
    // only with TokenSecretPrefix.
    fn walk(v: &Yaml, path: &str) {
        match v {
            Yaml::Mapping(m) => {
                for (k, val) in m {
                    let key = scalar(k);
                    if key == "Resource" {
                        let items: Vec<&Yaml> = match val {
                            Yaml::Sequence(s) => s.iter().collect(),
                            other => vec![other],
                        };
                        let action = m.get("Action").and_then(Yaml::as_str).unwrap_or_default();
                        // ListSecrets has no resource type either; it returns
                        // metadata, never values (see the fleet test).
                        let listing = action == "secretsmanager:ListSecrets";
                        let narrowed = m
                            .get("Condition")
                            .and_then(|c| c.get("ForAllValues:StringEquals"))
                            .and_then(|c| c.get("sts:IdentityTokenAudience"))
                            .is_some();
                        for item in items {
                            let exempt = (action == "sts:GetWebIdentityToken" && narrowed) || listing;
                            assert!(item.as_str() != Some("*") || exempt, "Resource: \"*\" at {path}");
                        }
                    }
                    walk(val, &format!("{path}.{key}"));
                }
            }
            Yaml::Sequence(s) => s.iter().enumerate().for_each(|(i, x)| walk(x, &format!("{path}[{i}]"))),
            Yaml::Tagged(t) => walk(&t.value, path),
            _ => {}
        }
    }
    walk(&raw_template(), "");
}

#[test]
fn the_function_is_the_binary_the_demo_runs() {
    let stack = Stack::with_targets(&["scim-relay/abm"], &[]);
    let f = function(&stack);
    // The Cargo binary exists under this name (Cargo sets this for integration tests).
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_scim-relay"));
    assert_eq!(bin.file_name().and_then(|n| n.to_str()), Some("scim-relay"));
    assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda");
    assert_eq!(f["Metadata"]["BuildProperties"]["Binary"], "scim-relay");
    let demo = std::fs::read_to_string(format!("{}/scripts/demo.sh", root())).expect("scripts/demo.sh");
    assert!(demo.contains("--bin scim-relay"), "the demo runs the scim-relay binary");
    let p = &f["Properties"];
    assert_eq!(p["CodeUri"], ".", "built from this Cargo workspace");
    assert_eq!(p["Handler"], "bootstrap");
    assert_eq!(p["Runtime"], "provided.al2023");
    assert_eq!(p["Architectures"], json!(["arm64"]));
    assert_eq!(p["ReservedConcurrentExecutions"], 1);
    assert!(p["MemorySize"].as_i64().expect("MemorySize") <= 256, "small memory");
    // One Graph call's retry budget (6 attempts x 30 s + 5 backoffs of 20 s)
    // must fit, and Lambda's maximum is 900 s.
    let timeout = p["Timeout"].as_i64().expect("Timeout");
    assert!((6 * 30 + 5 * 20..=900).contains(&timeout), "Timeout {timeout}");
    assert_eq!(p["LoggingConfig"]["LogGroup"], stack.reference("LogGroup").unwrap().unwrap());
    let lg = stack.resource("LogGroup");
    assert!(scalar_json(&lg["Properties"]["RetentionInDays"]).parse::<u32>().is_ok_and(|d| d > 0));
}

/// One metric as CloudWatch stores it: name and dimensions (name → value).
type MetricKey = (String, BTreeMap<String, String>);

/// Every metric the binary emits when it runs as the function `function_name`
/// (Lambda sets `AWS_LAMBDA_FUNCTION_NAME` to the deployed function's name,
/// which is what `Ref` of the function gives), from its own EMF lines: one
/// target with days left, every outcome, an undelivered alert.
fn emitted_metrics(function_name: &str) -> BTreeSet<MetricKey> {
    let mut results = Vec::new();
    for (i, outcome) in [Outcome::Unchanged, Outcome::Applied, Outcome::Failed].into_iter().enumerate() {
        let mut r = TargetResult::new(&format!("scim-relay/t{i}"), outcome, "");
        r.days_left = Some(12);
        r.live_token = Some(scim_relay::core::renew::LiveToken::Passed);
        results.push(r);
    }
    let report = RunReport { results, undelivered: vec!["expiring for scim-relay/t0: boom".into()], fanned_out: None };
    let mut out = BTreeSet::new();
    for line in scim_relay::lambda::metrics::emf_lines_for(function_name, &report, 0, 1_700_000_000_000) {
        let v: Json = serde_json::from_str(&line).expect("EMF is JSON");
        for d in v["_aws"]["CloudWatchMetrics"].as_array().expect("directives") {
            assert_eq!(d["Namespace"], scim_relay::lambda::metrics::NAMESPACE);
            for m in d["Metrics"].as_array().expect("metrics") {
                let name = m["Name"].as_str().expect("name").to_owned();
                assert!(v.get(&name).is_some(), "{name} has no value in {line}");
                for dims in d["Dimensions"].as_array().expect("dimension sets") {
                    let dims: BTreeMap<String, String> = dims
                        .as_array()
                        .expect("a set")
                        .iter()
                        .map(|x| {
                            let d = x.as_str().unwrap();
                            (d.to_owned(), v[d].as_str().unwrap_or_else(|| panic!("{d} has no value")).to_owned())
                        })
                        .collect();
                    out.insert((name.clone(), dims));
                }
            }
        }
    }
    out
}

/// The dimension sets (names only) each emitted metric has.
fn dimension_names(emitted: &BTreeSet<MetricKey>, metric: &str) -> BTreeSet<BTreeSet<String>> {
    emitted.iter().filter(|(n, _)| n == metric).map(|(_, d)| d.keys().cloned().collect()).collect()
}

fn alarm_dimensions(a: &Json) -> BTreeMap<String, String> {
    a.get("Dimensions")
        .map(|d| {
            d.as_array()
                .unwrap()
                .iter()
                .map(|x| (x["Name"].as_str().unwrap().to_owned(), x["Value"].as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn alarms_watch_what_the_binary_emits_and_notify_the_topic() {
    let raw = raw_template();
    let periods: Vec<String> = raw["Parameters"]["SchedulePeriodHours"]["AllowedValues"]
        .as_sequence()
        .expect("AllowedValues")
        .iter()
        .map(scalar)
        .collect();
    assert_eq!(
        periods,
        mapping(&raw["Mappings"]["SchedulePeriod"]).into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
        "every allowed schedule period has a mapping entry"
    );
    for hours in &periods {
        let stack = Stack::with_targets(&["scim-relay/abm"], &[("SchedulePeriodHours", json!(hours))]);
        let topic = stack.reference("AlertTopic").unwrap().unwrap();
        let function_name = stack.reference("ScimRelayFunction").unwrap().unwrap();
        let emitted = emitted_metrics(function_name.as_str().unwrap());
        let alarms: BTreeMap<String, Json> = stack
            .resources_of_type("AWS::CloudWatch::Alarm")
            .into_iter()
            .map(|(id, a)| (id, a["Properties"].clone()))
            .collect();
        assert_eq!(
            alarms.keys().collect::<Vec<_>>(),
            [
                "DaysLeftAlarm",
                "DestinationFailuresAlarm",
                "ErrorsAlarm",
                "HeartbeatAlarm",
                "LiveTokenAlarm",
                "UndeliveredEventsAlarm"
            ],
            "errors, heartbeat, days-left, live-token, undelivered-events and destination-failure alarms"
        );
        for (id, a) in &alarms {
            assert_eq!(a["AlarmActions"], json!([topic]), "{id} notifies the alert topic");
            let dims = alarm_dimensions(a);
            if a["Namespace"] == scim_relay::lambda::metrics::NAMESPACE {
                // The very metric (name, dimension names and values) the
                // binary emits in this stack: another stack's never matches.
                let name = a["MetricName"].as_str().expect("MetricName");
                assert!(
                    emitted.contains(&(name.to_owned(), dims.clone())),
                    "{id} watches {name} {dims:?}, which the binary does not emit: {:?}",
                    dimension_names(&emitted, name)
                );
                assert_eq!(
                    dims.get(scim_relay::lambda::metrics::STACK_DIMENSION),
                    Some(&function_name.as_str().unwrap().to_owned())
                );
            } else if a["Namespace"] == "AWS/Lambda" {
                assert_eq!(
                    dims,
                    BTreeMap::from([("FunctionName".to_owned(), function_name.as_str().unwrap().to_owned())]),
                    "{id}"
                );
            }
        }
        let by_metric = |m: &str| alarms.values().find(|a| a["MetricName"] == m).expect(m).clone();

        let n: i64 = hours.parse().expect("hours");
        let hb = by_metric("Heartbeat");
        let schedule = function(&stack)["Properties"]["Events"]["Schedule"]["Properties"]["ScheduleExpression"].clone();
        let unit = if n == 1 { "hour" } else { "hours" };
        assert_eq!(schedule, format!("rate({n} {unit})"), "the schedule runs every {n} h");
        let (period, evals) = (hb["Period"].as_i64().unwrap(), hb["EvaluationPeriods"].as_i64().unwrap());
        assert_eq!((hb["Statistic"].as_str(), hb["Threshold"].as_i64()), (Some("Sum"), Some(1)));
        assert_eq!(hb["ComparisonOperator"], "LessThanThreshold");
        assert_eq!(hb["TreatMissingData"], "breaching", "a missing heartbeat is the failure");
        assert_eq!(hb["DatapointsToAlarm"].as_i64(), Some(evals), "every period in the window must be empty");
        // The alarm fires only once two scheduled runs in a row are missing:
        // the window covers two periods plus the hour a run may land in...
        assert_eq!(period, 3600);
        assert_eq!(period * evals, (2 * n + 1) * 3600, "{n} h schedule");
        // ...and stays inside CloudWatch's limit (7 days, or 1 day for sub-hour periods).
        assert!(period * evals <= if period < 3600 { 86_400 } else { 604_800 });

        let dl = by_metric("DaysLeft");
        assert_eq!(
            alarm_dimensions(&dl).into_keys().collect::<Vec<_>>(),
            [scim_relay::lambda::metrics::STACK_DIMENSION],
            "DaysLeft without SecretId covers every target of this stack"
        );
        assert_eq!((dl["Statistic"].as_str(), dl["Threshold"].as_i64()), (Some("Minimum"), Some(7)));
        assert_eq!(dl["ComparisonOperator"], "LessThanThreshold");

        let lt = by_metric("LiveTokenValid");
        assert_eq!(
            alarm_dimensions(&lt).into_keys().collect::<Vec<_>>(),
            [scim_relay::lambda::metrics::STACK_DIMENSION],
            "LiveTokenValid without SecretId covers every target of this stack"
        );
        assert_eq!((lt["Statistic"].as_str(), lt["Threshold"].as_i64()), (Some("Minimum"), Some(1)));
        assert_eq!(lt["ComparisonOperator"], "LessThanThreshold");
        assert_eq!(lt["TreatMissingData"], "ignore", "daily mode reports once a day");

        let errors = by_metric("Errors");
        assert_eq!(errors["Namespace"], "AWS/Lambda");
        assert_eq!(
            errors["Dimensions"],
            json!([{"Name": "FunctionName", "Value": stack.reference("ScimRelayFunction").unwrap().unwrap()}])
        );
        assert_eq!(errors["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
        assert_eq!(errors["Threshold"], 1);
    }

    // A custom expression replaces the rate; the alarm still follows the period.
    let stack = Stack::with_targets(&["scim-relay/abm"], &[("ScheduleExpression", json!("cron(0 */6 * * ? *)"))]);
    let f = function(&stack);
    assert_eq!(f["Properties"]["Events"]["Schedule"]["Properties"]["ScheduleExpression"], "cron(0 */6 * * ? *)");

    // The e-mail subscription exists only when an address is given.
    let with = |email: &str| {
        Stack::with_targets(&["scim-relay/abm"], &[("AlertEmail", json!(email))]).condition("HasAlertEmail").unwrap()
    };
    assert!(with("admin@example.com") && !with(""));
    assert_eq!(scalar(&raw["Resources"]["AlertEmailSubscription"]["Condition"]), "HasAlertEmail");
}

/// Two stacks' metrics never meet: each alarm's metric exists only with its
/// own function's name.
#[test]
fn two_stacks_never_share_a_metric() {
    let a = emitted_metrics("stack-a-ScimRelayFunction-AAAA");
    let b = emitted_metrics("stack-b-ScimRelayFunction-BBBB");
    assert!(a.is_disjoint(&b), "{:?}", a.intersection(&b).collect::<Vec<_>>());
    // Every metric has the stack dimension in every dimension set.
    for (name, dims) in &a {
        assert!(dims.contains_key(scim_relay::lambda::metrics::STACK_DIMENSION), "{name} {dims:?}");
    }
    // Outside Lambda (no AWS_LAMBDA_FUNCTION_NAME) the stack is named by the fallback.
    if std::env::var("AWS_LAMBDA_FUNCTION_NAME").is_err() {
        assert_eq!(scim_relay::lambda::metrics::stack_name(), scim_relay::lambda::metrics::DEFAULT_STACK_NAME);
    }
}

/// The dashboard: days left per target, outcomes, alerts sent/undelivered,
/// Graph retries, duration against the timeout, runs/errors/undelivered
/// events, and the alarms; every ScimRelay metric it draws is one the binary
/// emits in this stack.
#[test]
fn the_dashboard_draws_what_the_binary_emits() {
    let stack = Stack::with_targets(&["scim-relay/abm"], &[("ExpiryWarningDays", json!("21"))]);
    let function_name = stack.reference("ScimRelayFunction").unwrap().unwrap().as_str().unwrap().to_owned();
    let emitted = emitted_metrics(&function_name);
    let dashboards = stack.resources_of_type("AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1, "one dashboard per stack");
    let p = &dashboards[0].1["Properties"];
    assert_eq!(p["DashboardName"], STACK);
    let body: Json = serde_json::from_str(p["DashboardBody"].as_str().expect("a JSON text"))
        .unwrap_or_else(|e| panic!("DashboardBody is not JSON: {e}"));
    let widgets = body["widgets"].as_array().expect("widgets");
    let titles: Vec<&str> = widgets.iter().map(|w| w["properties"]["title"].as_str().expect("a title")).collect();
    assert_eq!(
        titles,
        [
            "Days left per target (live token)",
            "Outcomes per run (targets by outcome)",
            "Alerts sent and undelivered",
            "Graph retries (429, 5xx, timeouts)",
            "Duration (max) against the timeout",
            "Runs, errors and events not processed",
            "Live token check per target (1 passes, 0 refused by Apple)",
            "Alarms"
        ]
    );
    let widget =
        |title: &str| widgets.iter().find(|w| w["properties"]["title"] == title).unwrap()["properties"].clone();

    // SEARCH expressions: one line per secret / per outcome, this stack only.
    let search = |title: &str, metric: &str, dims: &[&str]| {
        let w = widget(title);
        let expr = w["metrics"][0][0]["expression"].as_str().expect("an expression").to_owned();
        let schema = format!("{{{},{}}}", scim_relay::lambda::metrics::NAMESPACE, dims.join(","));
        assert!(
            expr.starts_with(&format!("SEARCH('{schema} MetricName=\"{metric}\" FunctionName=\"{function_name}\"'")),
            "{expr}"
        );
        let want: BTreeSet<String> = dims.iter().map(|d| d.to_string()).collect();
        assert!(dimension_names(&emitted, metric).contains(&want), "{metric} {dims:?} is not emitted");
        w
    };
    let days = search("Days left per target (live token)", "DaysLeft", &["FunctionName", "SecretId"]);
    let marks: Vec<i64> =
        days["annotations"]["horizontal"].as_array().unwrap().iter().map(|a| a["value"].as_i64().unwrap()).collect();
    assert_eq!(marks, [7, 21], "the alarm threshold and the warning window");
    search("Outcomes per run (targets by outcome)", "Targets", &["FunctionName", "Outcome"]);
    search(
        "Live token check per target (1 passes, 0 refused by Apple)",
        "LiveTokenValid",
        &["FunctionName", "SecretId"],
    );

    // Plain metric rows: [namespace, name, dim, value, ..., {options}].
    let mut drawn = BTreeSet::new();
    for w in widgets.iter().filter(|w| w["type"] == "metric") {
        for row in w["properties"]["metrics"].as_array().unwrap() {
            let row = row.as_array().unwrap();
            let Some(ns) = row[0].as_str() else { continue };
            let name = row[1].as_str().unwrap().to_owned();
            let pairs: Vec<&str> = row[2..].iter().filter_map(Json::as_str).collect();
            let dims: BTreeMap<String, String> = pairs.chunks(2).map(|c| (c[0].to_owned(), c[1].to_owned())).collect();
            if ns == scim_relay::lambda::metrics::NAMESPACE {
                assert!(
                    emitted.contains(&(name.clone(), dims.clone())),
                    "the dashboard draws {name} {dims:?}, not emitted"
                );
            } else if ns == "AWS/Lambda" {
                assert_eq!(dims, BTreeMap::from([("FunctionName".to_owned(), function_name.clone())]), "{name}");
            }
            drawn.insert(name);
        }
    }
    for m in [
        "AlertsSent",
        "AlertsUndelivered",
        "GraphRetries",
        "Duration",
        "Heartbeat",
        "Errors",
        "AsyncEventsDropped",
        "DestinationDeliveryFailures",
        "ApproximateNumberOfMessagesVisible",
    ] {
        assert!(drawn.contains(m), "the dashboard draws {m}");
    }

    // Duration against the function's timeout, in milliseconds.
    let d = widget("Duration (max) against the timeout");
    assert_eq!(d["stat"], "Maximum");
    let timeout = function(&stack)["Properties"]["Timeout"].as_i64().unwrap();
    assert_eq!(d["annotations"]["horizontal"][0]["value"].as_i64(), Some(timeout * 1000));

    // The alarm widget lists every alarm of the stack.
    let listed: BTreeSet<String> = strings(&widget("Alarms")["alarms"]).into_iter().collect();
    let alarms: BTreeSet<String> = stack
        .resources_of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(id, _)| format!("getatt:{id}.Arn"))
        .collect();
    assert_eq!(listed, alarms);
}

/// Nothing is dropped silently: async invocations retry at most once and
/// end on the alert topic; events Scheduler or the rule cannot hand over end
/// on a queue whose alarm notifies the topic.
#[test]
fn failed_and_undeliverable_events_reach_the_admin() {
    let stack = Stack::with_targets(&["scim-relay/abm"], &[]);
    let topic = stack.reference("AlertTopic").unwrap().unwrap();
    let f = function(&stack);
    let cfg = &f["Properties"]["EventInvokeConfig"];
    let retries = cfg["MaximumRetryAttempts"].as_i64().expect("MaximumRetryAttempts");
    assert!((0..=1).contains(&retries), "{retries}");
    let age = cfg["MaximumEventAgeInSeconds"].as_i64().expect("MaximumEventAgeInSeconds");
    assert!((60..=21_600).contains(&age), "{age}");
    assert_eq!(cfg["DestinationConfig"]["OnFailure"], json!({"Type": "SNS", "Destination": topic}));
    // Lambda delivers the record with the function's role: it may publish there.
    let statements = role_statements(&stack);
    assert!(statements
        .iter()
        .any(|s| actions(s).contains("sns:Publish") && strings(&s["Resource"]) == [topic.as_str().unwrap()]));

    let queue_arn = json!("getatt:UndeliveredEventsQueue.Arn");
    for event in ["Schedule", "TokenStored"] {
        let e = &f["Properties"]["Events"][event]["Properties"];
        assert_eq!(e["DeadLetterConfig"], json!({"Arn": queue_arn}), "{event}");
        let r = &e["RetryPolicy"];
        assert!(r["MaximumEventAgeInSeconds"].as_i64().is_some_and(|a| a <= 86_400), "{event}");
        assert!(r["MaximumRetryAttempts"].as_i64().is_some(), "{event}");
    }
    // The rule may write to the queue (Scheduler uses the role SAM grants).
    let policy = stack.resource("UndeliveredEventsQueuePolicy");
    let st = &policy["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(st["Principal"], json!({"Service": "events.amazonaws.com"}));
    assert_eq!(st["Resource"], queue_arn);
    assert_eq!(st["Condition"]["StringEquals"]["aws:SourceAccount"], ACCOUNT);
    // The queue's alarm notifies the topic.
    let alarm = stack.resource("UndeliveredEventsAlarm")["Properties"].clone();
    assert_eq!(alarm["Namespace"], "AWS/SQS");
    assert_eq!(alarm_dimensions(&alarm)["QueueName"], "getatt:UndeliveredEventsQueue.QueueName");
    assert_eq!(alarm["AlarmActions"], json!([topic]));
}

#[test]
fn provisioning_settings_reach_the_binary_validated() {
    let notify =
        r#"{"Enabled":true,"Recipients":"it@school.example","DeleteThresholdEnabled":true,"DeleteThresholdValue":500}"#;
    let env = env_of(&Stack::with_targets(&["scim-relay/abm"], &[]));
    assert_eq!((env["ENTRA_SYNC_ALL"].as_str(), env["ENTRA_SYNC_NOTIFICATION_SETTINGS"].as_str()), ("", ""));
    let d = Defaults::from_vars(&env).expect("parses");
    assert_eq!(d.provisioning, Default::default(), "empty parameters: nothing sent");
    let env = env_of(&Stack::with_targets(
        &["scim-relay/abm"],
        &[("SyncAll", json!("false")), ("SyncNotificationSettings", json!(notify))],
    ));
    let d = Defaults::from_vars(&env).expect("parses");
    assert_eq!(d.provisioning.sync_all, Some(false));
    assert!(d.provisioning.sync_notification_settings.is_some());
    let raw = raw_template();
    let allowed: Vec<String> =
        raw["Parameters"]["SyncAll"]["AllowedValues"].as_sequence().unwrap().iter().map(scalar).collect();
    assert_eq!(allowed, ["", "true", "false"]);
}

#[test]
fn a_fleet_by_prefix_gets_its_secrets_listing_a_rule_and_a_fan_out_queue() {
    const FLEET_RESOURCES: [&str; 7] = [
        "FleetPolicy",
        "TokenStoredUnderPrefix",
        "TokenStoredUnderPrefixPermission",
        "TargetQueue",
        "TargetDeadLetterQueue",
        "TargetQueueConsumer",
        "TargetDeadLetterAlarm",
    ];
    // Without a prefix: none of it, and one run at a time as before.
    let plain = Stack::with_targets(&["scim-relay/abm"], &[]);
    for id in FLEET_RESOURCES {
        assert!(!plain.exists(id), "{id} exists without TokenSecretPrefix");
    }
    assert_eq!(scalar_json(&function(&plain)["Properties"]["ReservedConcurrentExecutions"]), "1");
    assert_eq!(env_of(&plain)["SCIM_RELAY_QUEUE_URL"], "");
    assert!(!role_statements(&plain).iter().any(|st| actions(st).contains("secretsmanager:ListSecrets")));

    // A prefix and no names.
    let stack = Stack::with_targets(&[""], &[("TokenSecretPrefix", json!("scim-relay/"))]);
    for id in FLEET_RESOURCES {
        assert!(stack.exists(id), "{id} is missing with TokenSecretPrefix");
    }
    let env = env_of(&stack);
    let d = Defaults::from_vars(&env).expect("the environment parses");
    assert!(d.secret_ids.is_empty());
    assert_eq!(d.fleet.prefix.as_deref(), Some("scim-relay/"));
    assert_eq!(d.fleet.fanout_threshold, 50);
    let queue = d.fleet.queue.clone().expect("the queue URL is set");
    assert!(queue.url.ends_with("/scim-relay-targets.fifo"), "{}", queue.url);

    // IAM: the token actions on secret:PREFIX*, ListSecrets alone on "*",
    // SendMessage and the consumer's actions on the queue only.
    let statements = role_statements(&stack);
    let on = |arn: &str| -> BTreeSet<String> {
        statements
            .iter()
            .filter(|st| st["Effect"] == "Allow")
            .filter(|st| strings(&st["Resource"]).iter().any(|p| iam_matches(p, arn)))
            .flat_map(actions)
            .collect()
    };
    let token_actions: BTreeSet<String> = TOKEN_ACTIONS.iter().map(|a| a.to_string()).collect();
    let mut with_listing = token_actions.clone();
    with_listing.insert("secretsmanager:ListSecrets".into());
    let secret = |name: &str| format!("arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf");
    assert_eq!(on(&secret("scim-relay/school-17")), with_listing);
    assert_eq!(on(&secret("scim-relay/deep/er")), with_listing);
    for outside in ["scim-relay-other/abm", "Scim-relay/abm", "other/scim-relay/abm"] {
        assert_eq!(on(&secret(outside)), BTreeSet::from(["secretsmanager:ListSecrets".to_owned()]), "{outside}");
    }
    let listing: Vec<&Json> =
        statements.iter().filter(|st| actions(st).contains("secretsmanager:ListSecrets")).collect();
    assert_eq!(listing.len(), 1);
    assert_eq!(actions(listing[0]).len(), 1, "ListSecrets on \"*\" is granted alone");
    let prefix_statement = statements
        .iter()
        .find(|st| strings(&st["Resource"]).iter().any(|r| r.ends_with(":secret:scim-relay/*")))
        .expect("a statement on secret:PREFIX*");
    let named_statement = statements.iter().find(|st| st["Sid"] == "ManageTokenSecrets").expect("ManageTokenSecrets");
    assert_eq!(prefix_statement["Condition"], named_statement["Condition"], "the same tag keys only");
    let queue_arn = "getatt:TargetQueue.Arn";
    let sqs: BTreeSet<String> = statements
        .iter()
        .filter(|st| actions(st).iter().any(|a| a.starts_with("sqs:")))
        .inspect(|st| assert_eq!(strings(&st["Resource"]), [queue_arn], "SQS access on the queue only"))
        .flat_map(actions)
        .collect();
    assert_eq!(
        sqs,
        [
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
            "sqs:SendMessage"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );

    // The queue: FIFO, encrypted, a dead-letter queue with an alarm to the topic.
    let q = &stack.resource("TargetQueue")["Properties"];
    assert_eq!((scalar_json(&q["FifoQueue"]), scalar_json(&q["SqsManagedSseEnabled"])), ("true".into(), "true".into()));
    assert_eq!(q["RedrivePolicy"]["deadLetterTargetArn"], "getatt:TargetDeadLetterQueue.Arn");
    let receives: u32 = scalar_json(&q["RedrivePolicy"]["maxReceiveCount"]).parse().unwrap();
    assert!((1..=5).contains(&receives));
    assert!(scalar_json(&q["VisibilityTimeout"]).parse::<u32>().unwrap() >= 6 * 300);
    assert_eq!(scalar_json(&stack.resource("TargetDeadLetterQueue")["Properties"]["FifoQueue"]), "true");
    let alarm = &stack.resource("TargetDeadLetterAlarm")["Properties"];
    assert_eq!(alarm["Dimensions"][0]["Value"], "getatt:TargetDeadLetterQueue.QueueName");
    assert_eq!(alarm["AlarmActions"], json!([stack.reference("AlertTopic").unwrap().unwrap()]));

    // The consumer: the same function, partial batch failures, bounded
    // concurrency inside the function's reserved concurrency.
    let esm = &stack.resource("TargetQueueConsumer")["Properties"];
    assert_eq!(esm["EventSourceArn"], queue_arn);
    assert_eq!(esm["FunctionName"], stack.reference("ScimRelayFunction").unwrap().unwrap());
    assert_eq!(esm["FunctionResponseTypes"], json!(["ReportBatchItemFailures"]));
    assert!(scalar_json(&esm["BatchSize"]).parse::<u32>().unwrap() <= 10);
    let most: u32 = scalar_json(&esm["ScalingConfig"]["MaximumConcurrency"]).parse().unwrap();
    let reserved: u32 = scalar_json(&function(&stack)["Properties"]["ReservedConcurrentExecutions"]).parse().unwrap();
    assert_eq!((most, reserved), (5, 6), "one slot left for the schedule and label events");
    let raw = raw_template();
    for v in raw["Parameters"]["FanOutConcurrency"]["AllowedValues"].as_sequence().unwrap() {
        let s =
            Stack::with_targets(&[""], &[("TokenSecretPrefix", json!("p/")), ("FanOutConcurrency", json!(scalar(v)))]);
        let r: u32 = scalar_json(&function(&s)["Properties"]["ReservedConcurrentExecutions"]).parse().unwrap();
        assert_eq!(r, scalar(v).parse::<u32>().unwrap() + 1);
    }

    // The label rule for secrets under the prefix: a new secret is a target
    // without a redeploy; the relay's credential never is.
    let rule = &stack.resource("TokenStoredUnderPrefix")["Properties"];
    assert_eq!(
        rule["EventPattern"],
        json!({"source": ["aws.secretsmanager"], "detail-type": ["Secret Label Updated"],
            "detail": {"name": [{"prefix": "scim-relay/"}], "labelUpdated": ["AWSCURRENT"]}})
    );
    let perm = &stack.resource("TokenStoredUnderPrefixPermission")["Properties"];
    assert_eq!(perm["SourceArn"], "getatt:TokenStoredUnderPrefix.Arn");
    let label = |name: &str| {
        json!({"version": "0", "id": "1", "detail-type": "Secret Label Updated", "source": "aws.secretsmanager",
            "account": ACCOUNT, "time": "2026-11-23T06:00:00Z", "region": REGION,
            "resources": [format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-a1b2c3")],
            "detail": {"name": name, "labelUpdated": "AWSCURRENT", "versionId": "v"}})
    };
    match decode(&label("scim-relay/school-99"), &d).expect("decodes") {
        Decoded::Run(req) => assert!(matches!(req.targets, Targets::One(_))),
        other => panic!("expected a run, got {other:?}"),
    }
    let mut env = env;
    env.insert("ENTRA_CLIENT_SECRET_ID".into(), "scim-relay/graph-client-secret".into());
    let d = Defaults::from_vars(&env).expect("parses");
    assert!(matches!(decode(&label("scim-relay/graph-client-secret"), &d), Ok(Decoded::Ignore(_))));
}
