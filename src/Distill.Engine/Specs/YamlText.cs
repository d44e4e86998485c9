using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Distill.Engine.Specs;

/// <summary>A spec file's YAML, read once for the run and sweep parsers: text that is not YAML is a <see cref="SpecException"/> with its line.</summary>
public static class YamlText
{
    public static YamlStream Load(string text, string file)
    {
        var stream = new YamlStream();
        try { stream.Load(new StringReader(text)); }
        catch (YamlException e) { throw new SpecException(file, "", $"not valid YAML: {e.Message}", (int)e.Start.Line); }
        // YamlDotNet's representation model throws this (no position) for some unclosed flow collections, e.g. `data: {name: mnist` before another key
        catch (InvalidOperationException)
        {
            throw new SpecException(file, "", "not valid YAML: a flow mapping or sequence ({...} or [...]) is not closed before the next key");
        }
        return stream;
    }
}
