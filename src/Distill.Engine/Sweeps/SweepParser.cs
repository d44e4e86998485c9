using System.Globalization;
using Distill.Engine.Specs;
using Distill.Engine.Training;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Distill.Engine.Sweeps;

/// <summary>
/// Reads a sweep spec as strictly as a run spec: every key known, every value checked, errors with
/// file, line, key and reason. Every swept path and value is checked against the base method's own
/// schema by parsing the base spec with that value in place, before anything runs.
/// </summary>
public static class SweepParser
{
    public static readonly IReadOnlyList<string> DimensionKinds = ["choice", "grid", "uniform", "loguniform", "int"];

    /// <summary>The most trials a sweep may describe (a grid's product, or samples): its state lives in one journal.</summary>
    public const long MaxTrials = 1_000_000;

    /// <summary>Whether a YAML text is a sweep (it has a `space:` or `base:` key) rather than a run spec.</summary>
    public static bool IsSweep(string text)
    {
        try
        {
            var stream = YamlText.Load(text, "");
            return stream.Documents.Count == 1 && stream.Documents[0].RootNode is YamlMappingNode m && IsSweepMapping(m);
        }
        catch (SpecException) { return false; }
    }

    /// <summary>A sweep's mapping has `space:` or `base:`, which no run spec has.</summary>
    public static bool IsSweepMapping(YamlMappingNode m) =>
        m.Children.ContainsKey(new YamlScalarNode("space")) || m.Children.ContainsKey(new YamlScalarNode("base"));

    public static SweepSpec Load(string path)
    {
        if (!File.Exists(path)) throw new SpecException(path, "", "file not found");
        return Parse(File.ReadAllText(path), path);
    }

    public static SweepSpec Parse(string text, string file = "<sweep>")
    {
        var bytes = System.Text.Encoding.UTF8.GetByteCount(text);
        if (bytes > SpecParser.MaxSpecBytes) throw new SpecException(file, "", $"the sweep spec is {bytes:N0} bytes, over the {SpecParser.MaxSpecBytes:N0}-byte limit");
        var stream = YamlText.Load(text, file);
        if (stream.Documents.Count != 1 || stream.Documents[0].RootNode is not YamlMappingNode rootMap)
            throw new SpecException(file, "", "a sweep spec is one YAML mapping (key: value lines)");
        if (!IsSweepMapping(rootMap) && rootMap.Children.ContainsKey(new YamlScalarNode("method")))
            throw new SpecException(file, "", "a run spec (it has method: and no space: or base:), not a sweep spec: run it with `Cluster.Seed run`, or `submit` it");
        var root = new SpecNode(file, "", rootMap);

        var name = root.String("name", null, required: true)!;
        var seed = root.Int("seed", 0, 0, int.MaxValue);
        var (baseYaml, baseFile) = Base(root, rootMap, file);
        RunSpec baseSpec;
        try { baseSpec = SpecParser.Parse(baseYaml, baseFile); }
        catch (SpecException e) { throw new SpecException(file, "base", $"the base run spec is refused: {e.Message}", Line(rootMap, "base")); }

        var search = SpecSection.Parse(root.Section("search", required: false), new SearchSettings(), file, "search");
        var schedulerNode = root.Section("scheduler", required: false);
        var scheduler = SpecSection.Read(schedulerNode ?? SpecNode.Empty(file, "scheduler"), new SchedulerSettings());
        if (schedulerNode is not null)
        {
            foreach (var key in schedulerNode.Unread()) throw schedulerNode.Error(key, "unknown key");
            var applies = SchedulerSettings.KeysOf(scheduler.Kind);
            foreach (var key in SchedulerSettings.KeysOf("median").Concat(SchedulerSettings.KeysOf("asha")).Concat(SchedulerSettings.KeysOf("pbt")).Distinct())
                if (schedulerNode.Has(key) && !applies.Contains(key))
                    throw schedulerNode.Error(key, $"does not apply to the {scheduler.Kind} scheduler (its keys: {(applies.Count == 0 ? "none" : string.Join(", ", applies))})");
        }
        var limits = SpecSection.Parse(root.Section("limits", required: false), new SweepLimits(), file, "limits");
        var repeats = root.Int("repeats", 1, 1, 1000);
        var mode = root.Choice("mode", ["max", "min"], null, required: false);
        // a base spec that holds out a validation split is chosen on it: its evaluations measure the split
        var accuracy = baseSpec.Data.Validation > 0 ? DataSplits.ValidationAccuracy : DataSplits.TestAccuracy;
        var metric = root.String("metric", accuracy, required: false)!;

        var space = Space(root, rootMap, file, baseYaml, baseFile, baseSpec);
        root.EnsureAllConsumed();

        // the metrics a trial's student reports at its evaluations and steps
        var objective = baseSpec.Method.Objective(baseSpec);
        string[] metrics = [accuracy, objective.LossName];
        if (!metrics.Contains(metric))
            throw root.Error("metric", metric == DataSplits.TestAccuracy
                ? $"the base spec holds out a validation split (data.validation: {baseSpec.Data.Validation}): trials are chosen on val_accuracy, and the test set is measured once, at the end of each run"
                : $"method '{baseSpec.Method.Name}' reports {string.Join(" and ", metrics)}, not '{metric}'");
        mode ??= metric == accuracy ? "max" : "min";

        if (repeats > 1 && space.Any(d => d.Path == "seed"))
            throw root.Error("repeats", "the seed is swept: repeats would run the same seeds again; sweep the seed or repeat, not both");
        // each repeat is a trial of its own to the scheduler: one seed's trial stopped at a rung and
        // another's run to the end would be averaged as one configuration's result
        if (repeats > 1 && scheduler.Kind != "fifo")
            throw root.Error("repeats", $"with the {scheduler.Kind} scheduler a configuration's repeats are stopped or continued each on its own, " +
                "so their mean ± std would mix results taken at different steps: repeat with scheduler kind fifo (e.g. the best configurations of this sweep, in a second sweep)");
        var trialSteps = StudentSteps(baseSpec);
        if (search.Kind == "grid" && space.All(d => d is not GridDimension) && search.Samples == 1 && space.Count > 0 && space.Any(d => d.Values is null))
            throw root.Error("search", "a grid search needs grid dimensions; with only ranges and choices use search: {kind: random, samples: N}");
        foreach (var (key, given) in new[] { ("startup_trials", search.StartupTrials != 10), ("candidates", search.Candidates != 24), ("gamma", search.Gamma != 0.1) })
            if (given && search.Kind != "tpe") throw root.ErrorAt($"search.{key}", $"applies to the tpe search only, not {search.Kind}");
        if (search.Shuffle && search.Kind != "grid") throw root.ErrorAt("search.shuffle", $"applies to the grid search only, not {search.Kind}");
        if (search.Kind == "tpe" && space.Count == 0) throw root.Error("search", "tpe needs a search space");

        var grid = space.OfType<GridDimension>().Aggregate(1.0, (n, d) => n * d.Options.Count) * search.Samples * repeats;
        if (grid > MaxTrials) throw root.Error("space", $"the sweep describes {grid:N0} trials, over the {MaxTrials:N0} a sweep may hold");

        if (scheduler.MaxSteps > trialSteps && trialSteps > 0)
            throw root.ErrorAt("scheduler.max_steps", $"{scheduler.MaxSteps} is more than a trial's {trialSteps} student steps");
        var maxSteps = scheduler.MaxSteps > 0 ? scheduler.MaxSteps : (int)Math.Min(trialSteps, int.MaxValue);
        scheduler = scheduler with
        {
            MaxSteps = maxSteps,
            GracePeriod = scheduler.GracePeriod > 0 ? scheduler.GracePeriod : Math.Max(1, maxSteps / (scheduler.Kind == "asha" ? 27 : 10)),
            Interval = scheduler.Interval > 0 ? scheduler.Interval : Math.Max(1, maxSteps / 10),
        };
        if (scheduler.Kind is "asha" or "median" && scheduler.GracePeriod >= maxSteps)
            throw root.ErrorAt("scheduler.grace_period", $"{scheduler.GracePeriod} leaves no step to stop at: a trial runs {maxSteps} steps");
        if (scheduler.Kind == "pbt" && scheduler.Interval >= maxSteps)
            throw root.ErrorAt("scheduler.interval", $"{scheduler.Interval} leaves no step to exploit at: a trial runs {maxSteps} steps");
        if (scheduler.Kind == "pbt" && space.Count == 0)
            throw root.Error("scheduler", "pbt perturbs the swept hyperparameters: give a space");
        if (scheduler.Kind == "pbt" && space.FirstOrDefault(d => d.Path == "seed") is { } seedDim)
            throw root.ErrorAt("space", "pbt cannot perturb the seed of a trial that goes on from another's checkpoint");
        if (scheduler.Kind == "pbt" && space.FirstOrDefault(d => d.Values?.Any(v => !double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out _)) == true) is { } words)
            throw root.ErrorAt($"space.{words.Path}", $"pbt perturbs numbers, and '{words.Values!.First(v => !double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out _))}' " +
                "is not one: a trial that goes on from another's checkpoint cannot change what the checkpoint is of (an architecture, an optimiser)");
        if (scheduler.Kind == "pbt" && baseSpec.Method.Plan(baseSpec).KeepsBatches)
            throw root.Error("scheduler", $"pbt: method '{baseSpec.Method.Name}' trains on rounds of images that every later step samples again, " +
                "so a trial cannot go on from another's checkpoint without all of its rounds; use asha or median");

        return new SweepSpec
        {
            Name = name, Seed = seed, BaseYaml = baseYaml, BaseFile = baseFile, Base = baseSpec, Space = space, Search = search,
            Scheduler = scheduler, Repeats = repeats, Metric = metric, Mode = mode, Limits = limits, TrialSteps = trialSteps,
            SourceFile = file, SourceText = text,
        };
    }

    /// <summary>
    /// The sweep's text with its base run spec inline: what a sweep journals, so that a sweep
    /// resumed later is the one submitted even if the base file was edited or removed since.
    /// </summary>
    public static string SelfContained(SweepSpec sweep)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(sweep.SourceText));
        var root = (YamlMappingNode)stream.Documents[0].RootNode;
        var based = new YamlStream();
        based.Load(new StringReader(sweep.BaseYaml));
        root.Children[new YamlScalarNode("base")] = based.Documents[0].RootNode;
        var writer = new StringWriter();
        stream.Save(writer, assignAnchors: false);
        return writer.ToString().Replace("\n...\n", "\n");
    }

    /// <summary>The trial's run spec text: the base with the configuration's values, its name and (for a repeat) its seed.</summary>
    public static string TrialYaml(SweepSpec sweep, TrialConfig config, string trialName, int repeat)
    {
        var values = new List<KeyValuePair<string, string>>(config.Values) { new("name", trialName) };
        if (repeat > 0) values.Add(new("seed", (sweep.Base.Seed + repeat).ToString(CultureInfo.InvariantCulture)));
        // PBT copies a trial's source as it was at a pause: its source checkpoints at every pause step
        var every = sweep.Base.Cluster.GeneratorCheckpointEvery;
        if (sweep.Scheduler.Kind == "pbt" && (every == 0 || sweep.Scheduler.Interval % every != 0))
            values.Add(new("cluster.generator_checkpoint_every", sweep.Scheduler.Interval.ToString(CultureInfo.InvariantCulture)));
        return SpecYaml.With(sweep.BaseYaml, values);
    }

    private static long StudentSteps(RunSpec spec) => spec.Method.PipelineStudentSteps(spec, DataSplits.TrainImages(spec.Data) ?? 0);

    private static int Line(YamlMappingNode map, string key) =>
        map.Children.TryGetValue(new YamlScalarNode(key), out var v) ? (int)v.Start.Line : (int)map.Start.Line;

    private static (string Yaml, string File) Base(SpecNode root, YamlMappingNode map, string file)
    {
        root.Consume("base");
        if (!map.Children.TryGetValue(new YamlScalarNode("base"), out var node))
            throw new SpecException(file, "base", "required key is missing: the base run spec, a file or an inline mapping", (int)map.Start.Line);
        if (node is YamlScalarNode { Value: { Length: > 0 } path })
        {
            var full = Path.IsPathRooted(path) ? path : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(file)) ?? "", path);
            if (!File.Exists(full)) throw new SpecException(file, "base", $"the base run spec {full} does not exist", (int)node.Start.Line);
            return (File.ReadAllText(full), full);
        }
        if (node is YamlMappingNode inline)
        {
            var writer = new StringWriter();
            new YamlStream(new YamlDocument(inline)).Save(writer, assignAnchors: false);
            return (writer.ToString().Replace("\n...\n", "\n"), file);
        }
        throw new SpecException(file, "base", "expected a run spec file or an inline run spec (a mapping)", (int)node.Start.Line);
    }

    private static List<Dimension> Space(SpecNode root, YamlMappingNode map, string file, string baseYaml, string baseFile, RunSpec baseSpec)
    {
        root.Consume("space");
        var dims = new List<Dimension>();
        if (!map.Children.TryGetValue(new YamlScalarNode("space"), out var node) || node is YamlScalarNode { Value: "" or "~" or "null" }) return dims;
        if (node is not YamlMappingNode space) throw new SpecException(file, "space", "expected a mapping of spec paths to ranges", (int)node.Start.Line);
        foreach (var (k, v) in space.Children)
        {
            var path = (k as YamlScalarNode)?.Value ?? "";
            var line = (int)k.Start.Line;
            SpecException Error(string reason) => new(file, $"space.{path}", reason, line);
            if (path is "name" or "method") throw Error($"'{path}' cannot be swept: a sweep runs one method, and names its trials");
            if (path.Split('.').Any(p => p.Length == 0)) throw Error("not a dotted path of spec keys");
            if (v is not YamlMappingNode { Children.Count: 1 } range)
                throw Error($"expected one of {string.Join(", ", DimensionKinds)} with its values, e.g. {{loguniform: [0.0001, 0.01]}}");
            var (kindNode, argsNode) = range.Children.First();
            var kind = (kindNode as YamlScalarNode)?.Value ?? "";
            if (!DimensionKinds.Contains(kind)) throw Error($"'{kind}' is not one of: {string.Join(", ", DimensionKinds)}");
            var args = argsNode is YamlSequenceNode seq && seq.Children.All(c => c is YamlScalarNode)
                ? seq.Children.Select(c => ((YamlScalarNode)c).Value ?? "").ToArray()
                : throw Error($"{kind}: expected a list of values, e.g. {kind}: {Example(kind)}");
            Dimension dim = kind switch
            {
                "choice" or "grid" => List(kind, path, args, Error),
                "uniform" or "loguniform" => Range(kind, path, args, Error),
                _ => Ints(path, args, Error),
            };
            if (dims.Any(d => d.Path == path)) throw Error("swept twice");
            foreach (var value in dim.Representatives())
            {
                string trial;
                try { trial = SpecYaml.With(baseYaml, [new(path, value)]); }
                catch (ArgumentException e) { throw Error(e.Message); }
                RunSpec parsed;
                try { parsed = SpecParser.Parse(trial, baseFile); }
                catch (SpecException e) when (e.Key == path && e.Reason == "unknown key")
                { throw Error($"not a key of method '{baseSpec.Method.Name}''s run spec (see `Cluster.Seed methods`)"); }
                catch (SpecException e) when (e.Key == path)
                { throw Error($"{kind} value {value}: {e.Reason}"); }
                catch (SpecException e)
                { throw Error($"{kind} value {value} makes the run spec invalid: {(e.Key.Length > 0 ? $"'{e.Key}': " : "")}{e.Reason}"); }
                if (StudentSteps(parsed) != StudentSteps(baseSpec))
                    throw Error($"{kind} value {value} changes a trial's length ({StudentSteps(parsed)} student steps instead of {StudentSteps(baseSpec)}): " +
                                "the schedulers compare trials step for step, so every trial runs as many");
            }
            dims.Add(dim);
        }
        return dims;
    }

    private static string Example(string kind) => kind switch
    {
        "choice" or "grid" => "[0.1, 0.5, 0.9]",
        "uniform" => "[0.1, 0.9]",
        "loguniform" => "[0.0001, 0.01]",
        _ => "[1, 10] or [0, 100, 10] (low, high, step)",
    };

    private static Dimension List(string kind, string path, string[] args, Func<string, SpecException> error)
    {
        if (args.Length == 0) throw error($"{kind}: the list is empty");
        if (args.Distinct().Count() != args.Length) throw error($"{kind}: {args.GroupBy(a => a).First(g => g.Count() > 1).Key} is listed twice");
        return kind == "grid" ? new GridDimension(path, args) : new ChoiceDimension(path, args);
    }

    private static Dimension Range(string kind, string path, string[] args, Func<string, SpecException> error)
    {
        if (args.Length != 2) throw error($"{kind}: expected [low, high], got {args.Length} values");
        var bounds = args.Select(a => double.TryParse(a, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && double.IsFinite(d)
            ? d : throw error($"{kind}: '{a}' is not a finite number")).ToArray();
        var (low, high) = (bounds[0], bounds[1]);
        if (!(low < high)) throw error($"{kind}: the range [{Dimension.Number(low)}, {Dimension.Number(high)}] is empty (low must be below high)");
        if (kind == "loguniform" && low <= 0) throw error($"loguniform: the bounds must be above 0 (got {Dimension.Number(low)})");
        return new RangeDimension(path, low, high, kind == "loguniform");
    }

    private static Dimension Ints(string path, string[] args, Func<string, SpecException> error)
    {
        if (args.Length is not (2 or 3)) throw error($"int: expected [low, high] or [low, high, step], got {args.Length} values");
        var v = args.Select(a => long.TryParse(a.Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out var i)
            ? i : throw error($"int: '{a}' is not an integer")).ToArray();
        var step = v.Length == 3 ? v[2] : 1;
        if (step <= 0) throw error($"int: the step must be above 0 (got {step})");
        if (v[0] > v[1]) throw error($"int: the range [{v[0]}, {v[1]}] is empty (low above high)");
        if ((v[1] - v[0]) % step != 0) throw error($"int: {v[1]} is not low + a multiple of the step {step}");
        return new IntDimension(path, v[0], v[1], step);
    }
}
