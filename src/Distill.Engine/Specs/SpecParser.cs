using Distill.Engine.Methods;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Distill.Engine.Specs;

/// <summary>
/// Reads a YAML run spec strictly: every key must be known, every value of the right type and in
/// range, every method given the sections it needs and none it would ignore. Errors name the
/// file, line, key and reason. The keys are those the spec records declare
/// (<see cref="SpecSection"/>); the methods and their sections come from <see cref="MethodRegistry"/>.
/// </summary>
public static class SpecParser
{
    public static RunSpec Load(string path)
    {
        if (!File.Exists(path)) throw new SpecException(path, "", Directory.Exists(path) ? "a folder, not a spec file" : "file not found");
        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>
    /// The largest spec taken (a real one is a few KB): it travels in one journal event and one
    /// message, and a larger one is refused here, with its size, before anything sends or stores it.
    /// </summary>
    public const int MaxSpecBytes = 1 << 20;

    public static RunSpec Parse(string text, string file = "<spec>")
    {
        var bytes = System.Text.Encoding.UTF8.GetByteCount(text);
        if (bytes > MaxSpecBytes) throw new SpecException(file, "", $"the spec is {bytes:N0} bytes, over the {MaxSpecBytes:N0}-byte limit for a run spec");
        var stream = YamlText.Load(text, file);
        if (stream.Documents.Count != 1 || stream.Documents[0].RootNode is not YamlMappingNode rootMap)
            throw new SpecException(file, "", "a run spec is one YAML mapping (key: value lines)");
        if (Sweeps.SweepParser.IsSweepMapping(rootMap))
            throw new SpecException(file, "", "a sweep spec (it has space: or base:), not a run spec: run it with `Cluster.Seed sweep`, or `submit` it");
        // every key's problem is gathered and refused together (a user fixes them in one go); the checks across keys follow
        var problems = new List<SpecException>();
        var root = new SpecNode(file, "", rootMap, problems);

        var method = MethodRegistry.Get(root.Choice("method", MethodRegistry.Names, null, required: true)!);
        var spec = SpecSection.Read(root, new RunSpec { Method = method }) with { SourceFile = file, SourceText = text };

        try
        {
            var teacherSection = root.Section("teacher", required: method.Teacher == TeacherUse.Required);
            if (teacherSection is not null && method.Teacher == TeacherUse.None)
                root.Refuse(root.Error("teacher", $"method '{method.Name}' uses no teacher; remove the section"));
            else if (teacherSection is not null)
            {
                spec = spec with { Teacher = SpecSection.Read(teacherSection, new ModelSpec()) };
                teacherSection.EnsureAllConsumed();
            }
        }
        catch (SpecException e) { root.Refuse(e); }
        if (method.SectionName is { } section)
        {
            try { spec = spec with { Settings = SpecSection.Parse(root.Section(section, required: false), method.SectionDefaults!, file, section) }; }
            catch (SpecException e) { root.Refuse(e); }
        }
        foreach (var other in MethodRegistry.SectionNames.Where(s => s != method.SectionName && root.Has(s)))
            root.Refuse(root.Error(other, $"section does not apply to method '{method.Name}'"));
        root.EnsureAllConsumed();
        if (problems.Count > 0) throw SpecException.Of(problems);

        if (method.StudentSeesData && !spec.Student.Train.HasLength)
            throw root.ErrorAt("student.train", "give epochs or steps for the student's training");
        if (spec.BaselineTrain is { } baseline)
        {
            if (!spec.CompareBaseline)
                throw root.ErrorAt("baseline_train", "trains the student alone for compare_baseline; set compare_baseline: true, or remove it");
            if (!baseline.HasLength)
                throw root.ErrorAt("baseline_train", "give epochs or steps for the student trained alone");
        }
        if (method.Teacher == TeacherUse.Required && spec.Teacher is { Checkpoint: null } t && !t.Train.HasLength)
            throw root.ErrorAt("teacher.train", "give a checkpoint, or epochs or steps to train the teacher");
        if (spec.Teacher is { Checkpoint: not null } loaded && loaded.Train.HasLength)
            throw root.ErrorAt("teacher.train", "the teacher is loaded from its checkpoint, not trained: remove train's epochs or steps, or the checkpoint to train it");
        foreach (var (role, model) in new[] { ("teacher", spec.Teacher), ("student", spec.Student) })
            if (model?.Checkpoint is { } path && string.IsNullOrWhiteSpace(path))
                throw root.ErrorAt($"{role}.checkpoint", "is empty: give the weights file's path, or leave the key out");
        foreach (var (role, model) in new[] { ("teacher", spec.Teacher), ("student", spec.Student) })
            if (model is { Checkpoint: null } && (model.CheckpointKey is not null || model.KeyMap.Length > 0))
                throw root.ErrorAt($"{role}.{(model.CheckpointKey is not null ? "checkpoint_key" : "key_map")}", "applies to a checkpoint; give checkpoint too");
        foreach (var (role, model) in new[] { ("teacher", spec.Teacher), ("student", spec.Student) })
            if (model?.Arch.StartsWith("lenet5") == true && spec.Data.ImageSize != 32)
                throw root.ErrorAt("data.image_size", $"LeNet-5 ({role}) needs 32x32 inputs (image_size: 32)");
        if (method.PipelineBatchSize(spec) is { } batch && batch % spec.Cluster.Replicas != 0)
            throw root.ErrorAt("cluster.replicas", $"the batch of {batch} does not split evenly over {spec.Cluster.Replicas} replicas");
        if (method.Problems(spec).FirstOrDefault() is { Key: not null } problem)
            throw root.ErrorAt(problem.Key, problem.Reason);
        return spec;
    }

    /// <summary>
    /// The spec with every default filled in, as YAML that parses back to the same spec (the run
    /// directory's spec.resolved.yaml).
    /// </summary>
    public static string Write(RunSpec spec)
    {
        var root = SpecSection.Write(spec);
        var ordered = new YamlMappingNode { { "name", root.Children[new YamlScalarNode("name")] }, { "method", spec.Method.Name } };
        foreach (var (k, v) in root.Children)
            if (((YamlScalarNode)k).Value != "name") ordered.Add(k, v);
        if (spec.Teacher is { } teacher) ordered.Add("teacher", SpecSection.Write(teacher));
        if (spec.Method.SectionName is { } section && spec.Settings is { } settings) ordered.Add(section, SpecSection.Write(settings));
        var writer = new StringWriter();
        new YamlStream(new YamlDocument(ordered)).Save(writer, assignAnchors: false);
        return writer.ToString().Replace("\n...\n", "\n");
    }
}
