using System.Security.Cryptography;
using System.Text;

namespace Cluster.Node.Http;

/// <summary>
/// The bearer token of the seed's HTTP API. It comes from the environment (CLUSTERDISTILL_TOKEN) or
/// from a file (--token-file, CLUSTERDISTILL_TOKEN_FILE, default ~/.clusterdistill/token), never
/// from the command line, where every user of the machine can read it. A seed with no token
/// creates the file, readable by its owner only, with 256 random bits; the CLI reads the same file.
/// </summary>
public sealed class ApiToken
{
    public const string EnvToken = "CLUSTERDISTILL_TOKEN";
    public const string EnvFile = "CLUSTERDISTILL_TOKEN_FILE";
    private const int MinLength = 16;

    private readonly byte[] expected;

    private ApiToken(string value, string source)
    {
        Value = value;
        Source = source;
        expected = Encoding.UTF8.GetBytes("Bearer " + value);
    }

    public string Value { get; }

    /// <summary>Where it came from, for messages (never the token itself).</summary>
    public string Source { get; }

    public static string DefaultFile =>
        Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".clusterdistill", "token");

    /// <summary>The file a command uses: --token-file, else CLUSTERDISTILL_TOKEN_FILE, else the default.</summary>
    public static string FileOf(string? option) =>
        option ?? (Environment.GetEnvironmentVariable(EnvFile) is { Length: > 0 } f ? f : DefaultFile);

    /// <summary>The seed's token: the environment's, the file's, or a new one written to the file.</summary>
    public static ApiToken ForServer(string? fileOption)
    {
        if (FromEnvironment() is { } env) return env;
        var file = FileOf(fileOption);
        if (File.Exists(file)) return Read(file);
        var dir = Path.GetDirectoryName(Path.GetFullPath(file))!;
        Directory.CreateDirectory(dir);
        var value = Convert.ToHexString(RandomNumberGenerator.GetBytes(32)).ToLowerInvariant();
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        try
        {
            using var w = new StreamWriter(file, Encoding.ASCII, options);
            w.WriteLine(value);
        }
        catch (IOException) when (File.Exists(file)) { return Read(file); }   // another seed on this machine made it first
        return new ApiToken(value, $"{file} (created)");
    }

    /// <summary>The CLI's token: the environment's or the file's; a clear error when there is none.</summary>
    public static ApiToken ForClient(string? fileOption)
    {
        if (FromEnvironment() is { } env) return env;
        var file = FileOf(fileOption);
        if (!File.Exists(file))
            throw new Distill.Engine.Specs.InputException($"no API token: set {EnvToken}, or --token-file / {EnvFile} (the seed writes its token to {DefaultFile} unless told otherwise); {file} does not exist");
        return Read(file);
    }

    /// <summary>Whether an Authorization header carries this token (compared in constant time).</summary>
    public bool Accepts(string? authorization) =>
        authorization is not null && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(authorization.Trim()), expected);

    public string Header => "Bearer " + Value;

    private static ApiToken? FromEnvironment() =>
        Environment.GetEnvironmentVariable(EnvToken) is { Length: > 0 } t ? Checked(t.Trim(), $"${EnvToken}") : null;

    private static ApiToken Read(string file)
    {
        string text;
        try { text = File.ReadAllText(file).Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InvalidOperationException($"cannot read the API token file {file}: {e.Message}", e); }
        return Checked(text, file);
    }

    private static ApiToken Checked(string value, string source)
    {
        if (value.Length < MinLength || value.Any(c => c <= ' ' || c > '~'))
            throw new Distill.Engine.Specs.InputException($"the API token in {source} must be at least {MinLength} printable ASCII characters without spaces");
        return new ApiToken(value, source);
    }
}
