//! Build stages: the split at each FROM, the global ARGs before the first one, `--target`, and
//! which stages a target needs and in which order.
//!
//! As BuildKit: stage names are case-insensitive; a FROM names an *earlier* stage (the latest
//! earlier one of that name), else `scratch`, else an image; `COPY --from` takes a stage name
//! or index defined before the current stage, else an image, and never a variable; `RUN
//! --mount from=` takes a stage name (any) or an image; a stage built FROM another also runs
//! that stage's ONBUILD triggers, whose references count as its own. A duplicate stage name
//! only warns: `--target` and `--from` bind its last definition.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Serialize;

use crate::dockerfile::{Command, Dockerfile, ParseError, Warning};
use crate::subst::Lexer;

/// The stages of a Dockerfile (indices point into [`Dockerfile::instructions`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stages {
    /// The ARG instructions before the first FROM.
    pub meta_args: Vec<usize>,
    pub stages: Vec<Stage>,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// Its FROM instruction.
    pub from: usize,
    /// One past its last instruction.
    pub end: usize,
}

impl Stage {
    /// The instructions after its FROM.
    pub fn body(&self) -> Range<usize> {
        self.from + 1..self.end
    }

    /// Its name, or `stage-N` as BuildKit shows an unnamed stage.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    Scratch,
    Stage(usize),
    Image(String),
}

/// One stage to build, its FROM resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StagePlan {
    pub index: usize,
    pub base: Base,
    /// `FROM --platform`, expanded.
    pub platform: Option<String>,
    /// Stages it needs built first (its base stage included), ascending.
    pub deps: Vec<usize>,
    /// Images it reads files from (`COPY --from`, `RUN --mount from=`), in order.
    pub images: Vec<String>,
}

/// The stages a target needs, each after the stages it depends on (stages that do not depend
/// on each other may be built in parallel).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub stages: Vec<StagePlan>,
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// Splits the instructions into stages.
    pub fn stages(&self) -> Result<Stages, ParseError> {
        Stages::new(self)
    }
}

/// A dependency of a stage and the instruction that makes it.
struct Edge {
    stage: usize,
    line: usize,
    instruction: &'static str,
}

impl Stages {
    pub fn new(df: &Dockerfile) -> Result<Stages, ParseError> {
        let (mut meta_args, mut stages, mut warnings) = (Vec::new(), Vec::<Stage>::new(), Vec::new());
        for (i, inst) in df.instructions.iter().enumerate() {
            match &inst.command {
                Command::From(f) => {
                    let duplicate = f.name.as_ref().filter(|n| stages.iter().any(|s| s.name.as_ref() == Some(*n)));
                    if let Some(name) = duplicate {
                        let message =
                            format!("DuplicateStageName: duplicate stage name {name:?}, stage names should be unique");
                        warnings.push(Warning { line: inst.line, message });
                    }
                    stages.push(Stage { index: stages.len(), name: f.name.clone(), from: i, end: i + 1 });
                }
                Command::Arg(_) if stages.is_empty() => meta_args.push(i),
                cmd if stages.is_empty() => {
                    return Err(ParseError::new(
                        inst.line,
                        format!("{}: no build stage in current context", cmd.name()),
                    ));
                }
                _ => {}
            }
        }
        let mut next_from = df.instructions.len();
        for s in stages.iter_mut().rev() {
            s.end = next_from;
            next_from = s.from;
        }
        if stages.is_empty() {
            return Err(ParseError::new(0, "dockerfile contains no stages to build"));
        }
        Ok(Stages { meta_args, stages, warnings })
    }

    /// The last stage of that name (names are case-insensitive).
    pub fn find(&self, name: &str) -> Option<usize> {
        let name = name.to_lowercase();
        self.stages.iter().rposition(|s| s.name.as_deref() == Some(name.as_str()))
    }

    /// The stage `--target` names, or the last one.
    pub fn target(&self, target: Option<&str>) -> Result<usize, ParseError> {
        match target {
            None => Ok(self.stages.len() - 1),
            Some(t) => self.find(t).ok_or_else(|| ParseError::new(0, format!("target stage {t:?} could not be found"))),
        }
    }

    /// The values FROM sees: the predefined arguments (see [`crate::subst::platform_args`]),
    /// then each global ARG in order: its `--build-arg` value if given, else its default
    /// expanded with what came before. An ARG without either leaves a predefined value alone
    /// and is otherwise unset.
    pub fn meta_args(
        &self,
        df: &Dockerfile,
        build_args: &BTreeMap<String, String>,
        predefined: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ParseError> {
        let lexer = Lexer::new(df.directives.escape);
        let mut vars = predefined.clone();
        for inst in self.meta_args.iter().filter_map(|&i| df.instructions.get(i)) {
            let Command::Arg(decls) = &inst.command else { continue };
            for d in decls {
                if let Some(v) = build_args.get(&d.name) {
                    vars.insert(d.name.clone(), v.clone());
                } else if let Some(default) = &d.default {
                    let v = lexer.word(default, &vars).map_err(|e| ParseError::new(inst.line, format!("ARG: {e}")))?;
                    vars.insert(d.name.clone(), v);
                }
            }
        }
        Ok(vars)
    }

    /// The stages `target` needs, dependencies first, with FROM resolved against `meta` (from
    /// [`Stages::meta_args`]). Fails on a blank base name, a bad `--from` or a cycle.
    pub fn plan(&self, df: &Dockerfile, target: usize, meta: &BTreeMap<String, String>) -> Result<Plan, ParseError> {
        if target >= self.stages.len() {
            return Err(ParseError::new(0, format!("no stage {target}")));
        }
        let declared: BTreeSet<&str> = self
            .meta_args
            .iter()
            .filter_map(|&i| match df.instructions.get(i).map(|i| &i.command) {
                Some(Command::Arg(decls)) => Some(decls.iter().map(|d| d.name.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        let mut resolved: Vec<Option<(StagePlan, Vec<Edge>)>> = (0..self.stages.len()).map(|_| None).collect();
        let mut warnings = Vec::new();
        // Iterative depth-first walk: 1 = on the path, 2 = done. No recursion, however many
        // stages a hostile file has.
        let mut state = vec![0u8; self.stages.len()];
        let mut order = Vec::new();
        let mut path: Vec<(usize, usize)> = Vec::new();
        resolved[target] = Some(self.resolve(df, target, meta, &declared, &mut warnings)?);
        state[target] = 1;
        path.push((target, 0));
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let edges = resolved[node].as_ref().map_or(&[][..], |(_, e)| e.as_slice());
            let Some(edge) = edges.get(*next) else {
                state[node] = 2;
                order.push(node);
                path.pop();
                continue;
            };
            *next += 1;
            let (dep, line, instruction) = (edge.stage, edge.line, edge.instruction);
            match state[dep] {
                0 => {
                    resolved[dep] = Some(self.resolve(df, dep, meta, &declared, &mut warnings)?);
                    state[dep] = 1;
                    path.push((dep, 0));
                }
                1 => {
                    let start = path.iter().position(|(s, _)| *s == dep).unwrap_or(0);
                    let mut names: Vec<String> =
                        path[start..].iter().map(|(s, _)| self.stages[*s].display_name()).collect();
                    names.push(self.stages[dep].display_name());
                    let message = format!(
                        "{instruction}: circular dependency detected on stage: {} ({})",
                        self.stages[dep].display_name(),
                        names.join(" -> ")
                    );
                    return Err(ParseError::new(line, message));
                }
                _ => {}
            }
        }
        let stages = order.into_iter().filter_map(|i| resolved[i].take().map(|(plan, _)| plan)).collect();
        Ok(Plan { stages, warnings })
    }

    /// One stage's base, platform and references.
    fn resolve(
        &self,
        df: &Dockerfile,
        index: usize,
        meta: &BTreeMap<String, String>,
        declared: &BTreeSet<&str>,
        warnings: &mut Vec<Warning>,
    ) -> Result<(StagePlan, Vec<Edge>), ParseError> {
        let stage = &self.stages[index];
        let Some(inst) = df.instructions.get(stage.from) else {
            return Err(ParseError::new(0, format!("stage {index} has no FROM")));
        };
        let Command::From(from) = &inst.command else {
            return Err(ParseError::new(inst.line, format!("stage {index} does not start with FROM")));
        };
        let lexer = Lexer::new(df.directives.escape);
        let expand = |text: &str, warnings: &mut Vec<Warning>| {
            let (value, unset) =
                lexer.word_unset(text, meta).map_err(|e| ParseError::new(inst.line, format!("FROM: {e}")))?;
            for name in unset.iter().filter(|n| !declared.contains(n.as_str())) {
                let message = format!("UndefinedArgInFrom: FROM argument {name:?} is not declared");
                warnings.push(Warning { line: inst.line, message });
            }
            Ok::<_, ParseError>(value)
        };
        let image = expand(&from.image, warnings)?;
        if image.is_empty() {
            return Err(ParseError::new(inst.line, format!("FROM: base name ({}) should not be blank", from.image)));
        }
        let platform = match &from.platform {
            Some(p) => Some(expand(p, warnings)?).filter(|p| !p.is_empty()),
            None => None,
        };
        let lower = image.to_lowercase();
        let earlier = self.stages[..index].iter().rposition(|s| s.name.as_deref() == Some(lower.as_str()));
        let base = match earlier {
            Some(j) => Base::Stage(j),
            None if image == "scratch" => Base::Scratch,
            None => Base::Image(image),
        };
        let mut edges = Vec::new();
        let mut images = Vec::new();
        if let Base::Stage(j) = base {
            edges.push(Edge { stage: j, line: inst.line, instruction: "FROM" });
        }
        for i in stage.body() {
            let Some(inst) = df.instructions.get(i) else { continue };
            self.references(&inst.command, index, inst.line, &mut edges, &mut images)?;
        }
        // The parent stage's ONBUILD triggers run here.
        if let Base::Stage(j) = base {
            for i in self.stages[j].body() {
                if let Some(Command::Onbuild(o)) = df.instructions.get(i).map(|i| &i.command) {
                    let line = df.instructions[i].line;
                    self.references(&o.command, index, line, &mut edges, &mut images)?;
                }
            }
        }
        // Dependencies are walked in stage order, so the build order is stable and readable.
        edges.sort_by_key(|e| (e.stage, e.line));
        let deps: BTreeSet<usize> = edges.iter().map(|e| e.stage).collect();
        let plan = StagePlan { index, base, platform, deps: deps.into_iter().collect(), images };
        Ok((plan, edges))
    }

    /// The stages and images one instruction reads from.
    fn references(
        &self,
        cmd: &Command,
        current: usize,
        line: usize,
        edges: &mut Vec<Edge>,
        images: &mut Vec<String>,
    ) -> Result<(), ParseError> {
        match cmd {
            Command::Copy(c) => {
                let Some(from) = &c.from else { return Ok(()) };
                let err = |m: String| ParseError::new(line, format!("COPY: {m}"));
                if from.contains('$') {
                    return Err(err("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround".into()));
                }
                let stage = match from.parse::<i64>() {
                    Ok(i) if i < 0 || i >= self.stages.len() as i64 => {
                        return Err(err(format!("invalid stage index {i}")));
                    }
                    Ok(i) => Some(i as usize),
                    Err(_) => self.find(from),
                };
                match stage {
                    Some(s) if s >= current => Err(err(format!(
                        "cannot copy from stage {from:?}, it needs to be defined before current stage {:?}",
                        self.stages[current].display_name()
                    ))),
                    Some(s) => {
                        edges.push(Edge { stage: s, line, instruction: "COPY" });
                        Ok(())
                    }
                    None => {
                        images.push(from.clone());
                        Ok(())
                    }
                }
            }
            Command::Run(r) => {
                for from in r.mounts.iter().filter_map(|m| m.from.as_ref()) {
                    match self.find(from) {
                        Some(s) => edges.push(Edge { stage: s, line, instruction: "RUN" }),
                        None => images.push(from.clone()),
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn df(text: &str) -> Dockerfile {
        Dockerfile::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn plan_of(text: &str, target: Option<&str>, build_args: &[(&str, &str)]) -> Result<Plan, String> {
        let d = df(text);
        let stages = d.stages().map_err(|e| e.to_string())?;
        let t = stages.target(target).map_err(|e| e.to_string())?;
        let ba = build_args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let meta = stages.meta_args(&d, &ba, &BTreeMap::new()).map_err(|e| e.to_string())?;
        stages.plan(&d, t, &meta).map_err(|e| e.to_string())
    }

    fn order(p: &Plan) -> Vec<usize> {
        p.stages.iter().map(|s| s.index).collect()
    }

    #[test]
    fn split_and_target() {
        let d = df("ARG A=1\nARG B\nFROM x AS One\nRUN a\nFROM y\nCOPY --from=one / /\nFROM z AS one");
        let s = d.stages().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.meta_args, vec![0, 1]);
        assert_eq!(s.stages.iter().map(|s| (s.from, s.end)).collect::<Vec<_>>(), vec![(2, 4), (4, 6), (6, 7)]);
        assert_eq!(s.find("ONE"), Some(2), "the last definition");
        assert_eq!(s.target(None).ok(), Some(2));
        assert_eq!(
            s.target(Some("nope")).map_err(|e| e.to_string()),
            Err("Dockerfile: target stage \"nope\" could not be found".into())
        );
        assert_eq!(s.warnings.len(), 1);
        assert_eq!(s.stages[1].display_name(), "stage-1");
        let e = df("ENV a=b\nFROM x").stages().err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("Dockerfile:1: ENV: no build stage in current context"));
        let e = df("ARG x").stages().err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("Dockerfile: dockerfile contains no stages to build"));
    }

    #[test]
    fn only_needed_stages_dependencies_first() {
        let text = "FROM alpine AS a\nFROM a AS b\nFROM busybox AS unused\nFROM scratch AS c\nCOPY --from=b /x /x\nCOPY --from=0 /y /y\nCOPY --from=nginx:1 /z /z\nRUN --mount=from=a,target=/m --mount=type=cache,target=/c,from=redis true";
        let p = plan_of(text, None, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(order(&p), vec![0, 1, 3]);
        let c = &p.stages[2];
        assert_eq!((c.base.clone(), c.deps.clone()), (Base::Scratch, vec![0, 1]));
        assert_eq!(c.images, vec!["nginx:1".to_string(), "redis".to_string()]);
        assert_eq!(p.stages[1].base, Base::Stage(0));
        assert_eq!(p.stages[0].base, Base::Image("alpine".into()));
        let p = plan_of(text, Some("A"), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(order(&p), vec![0]);
    }

    #[test]
    fn from_uses_global_args() {
        let text = "ARG BASE=alpine\nARG TAG=${BASE}-3\nFROM ${BASE}:${TAG} AS x\nFROM $UNDECLARED${BASE} AS y\n";
        let p = plan_of(text, Some("x"), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.stages[0].base, Base::Image("alpine:alpine-3".into()));
        let p = plan_of(text, Some("x"), &[("BASE", "debian")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.stages[0].base, Base::Image("debian:debian-3".into()));
        let p = plan_of(text, Some("y"), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.warnings.len(), 1);
        let e = plan_of("ARG V\nFROM $V", None, &[]).err();
        assert_eq!(e.as_deref(), Some("Dockerfile:2: FROM: base name ($V) should not be blank"));
        let p = plan_of("FROM a AS b\nFROM B\nFROM --platform=$P c", Some("stage-1"), &[]);
        assert!(p.is_err(), "stage-N is not a name");
        let p = plan_of("FROM a AS b\nFROM B", None, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.stages[1].base, Base::Stage(0));
        let p = plan_of("ARG P=linux/arm64\nFROM --platform=$P c", None, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.stages[0].platform.as_deref(), Some("linux/arm64"));
        assert_eq!(plan_of("FROM x AS x", None, &[]).map(|p| p.stages[0].base.clone()), Ok(Base::Image("x".into())));
    }

    #[test]
    fn bad_references_and_cycles() {
        let e = |t: &str| plan_of(t, None, &[]).err().unwrap_or_default();
        assert_eq!(e("FROM a\nCOPY --from=5 / /"), "Dockerfile:2: COPY: invalid stage index 5");
        assert_eq!(
            plan_of("FROM a AS x\nCOPY --from=y / /\nFROM b AS y", Some("x"), &[]).err().unwrap_or_default(),
            "Dockerfile:2: COPY: cannot copy from stage \"y\", it needs to be defined before current stage \"x\""
        );
        assert_eq!(
            e("FROM a AS x\nCOPY --from=x / /"),
            "Dockerfile:2: COPY: cannot copy from stage \"x\", it needs to be defined before current stage \"x\""
        );
        assert!(e("FROM a\nCOPY --from=$S / /").contains("variable expansion is not supported for --from"));
        assert_eq!(
            e("FROM a AS x\nRUN --mount=from=y,target=/y true\nFROM b AS y\nRUN --mount=from=x,target=/x true"),
            "Dockerfile:2: RUN: circular dependency detected on stage: y (y -> x -> y)"
        );
        assert_eq!(
            e("FROM a AS x\nRUN --mount=from=x true"),
            "Dockerfile:2: RUN: circular dependency detected on stage: x (x -> x)"
        );
    }

    #[test]
    fn onbuild_triggers_of_a_parent_stage() {
        let text = "FROM a AS tools\nFROM b AS parent\nONBUILD COPY --from=tools /t /t\nFROM parent\nRUN x";
        let p = plan_of(text, None, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(order(&p), vec![0, 1, 2]);
        assert_eq!(p.stages[2].deps, vec![0, 1]);
    }

    #[test]
    fn many_stages_without_recursion() {
        let mut text = String::from("FROM scratch AS s0\n");
        for i in 1..5000 {
            text.push_str(&format!("FROM s{} AS s{i}\n", i - 1));
        }
        let p = plan_of(&text, None, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.stages.len(), 5000);
        assert_eq!(p.stages[0].index, 0);
    }
}
