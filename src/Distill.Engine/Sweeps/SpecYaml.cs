using YamlDotNet.RepresentationModel;

namespace Distill.Engine.Sweeps;

/// <summary>A run spec's YAML with values put at dotted paths: how a sweep makes each trial's spec from its base.</summary>
public static class SpecYaml
{
    /// <summary>
    /// The spec text with each (path, scalar) set, sections created where missing. A path through
    /// a key that holds a value, not a section, is refused (<see cref="ArgumentException"/>, naming it).
    /// </summary>
    public static string With(string yaml, IEnumerable<KeyValuePair<string, string>> values)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(yaml));
        var root = (YamlMappingNode)stream.Documents[0].RootNode;
        foreach (var (path, value) in values) Set(root, path, value);
        var writer = new StringWriter();
        stream.Save(writer, assignAnchors: false);
        return writer.ToString().Replace("\n...\n", "\n");
    }

    private static void Set(YamlMappingNode root, string path, string value)
    {
        var parts = path.Split('.');
        var node = root;
        for (var i = 0; i < parts.Length - 1; i++)
        {
            var key = new YamlScalarNode(parts[i]);
            if (!node.Children.TryGetValue(key, out var next) || next is YamlScalarNode { Value: "" or "~" or "null" })
                node.Children[key] = next = new YamlMappingNode();
            node = next as YamlMappingNode
                   ?? throw new ArgumentException($"'{string.Join('.', parts[..(i + 1)])}' holds a value, not a section, so '{path}' is not a key");
        }
        node.Children[new YamlScalarNode(parts[^1])] = new YamlScalarNode(value);
    }
}
