namespace Cluster.Node.Storage;

/// <summary>
/// What the journal has acknowledged, kept outside it: per persistent actor, the highest sequence
/// number written, in a small file beside the blobs (root/witness/). An actor that recovers to less
/// than its witness has lost events (a damaged or deleted SQLite WAL, a database restored from an
/// older backup) and says so instead of silently redoing or skipping work. A witness names its
/// journal: one written for another journal (a fresh database on the same store) vouches for nothing.
/// A file torn by a crash reads as no witness, never as more than was written.
/// </summary>
public sealed class JournalWitness(string root, string journal)
{
    private readonly string dir = Path.Combine(root, "witness");

    public string FileOf(string persistenceId) =>
        Path.Combine(dir, string.Concat(persistenceId.Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' ? c : '+')) + ".seq");

    /// <summary>The highest sequence number recorded for this actor and journal (0: none).</summary>
    public long Recorded(string persistenceId)
    {
        var file = FileOf(persistenceId);
        string text;
        try { text = File.ReadAllText(file); }
        catch (FileNotFoundException) { return 0; }
        catch (DirectoryNotFoundException) { return 0; }
        var lines = text.Split('\n');
        return lines.Length == 3 && lines[1] == journal && lines[2] == "end" && long.TryParse(lines[0], out var seq) ? seq : 0;
    }

    /// <summary>Records that the journal acknowledged events up to `sequenceNr` (call only after it did).</summary>
    public void Record(string persistenceId, long sequenceNr)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(FileOf(persistenceId), $"{sequenceNr}\n{journal}\nend");
    }

    /// <summary>Null when the recovered state holds everything recorded, else what was lost, for the log and the run.</summary>
    public string? Loss(string persistenceId, long recovered)
    {
        var recorded = Recorded(persistenceId);
        return recovered >= recorded ? null
            : $"the journal ({journal}) lost events of {persistenceId}: it recovered up to event {recovered}, but had acknowledged " +
              $"{recorded} ({FileOf(persistenceId)}): a damaged or missing SQLite write-ahead log, or a database older than its store. " +
              "Nothing was redone or skipped. Restore the journal from a backup to go on, or delete that file to accept what the journal holds " +
              "(a run failed by this stays failed: run its spec again under another run id)";
    }

    /// <summary>One persistent actor's side: checked once after recovery, moved on after every acknowledged write.</summary>
    public Tracker For(string persistenceId) => new(this, persistenceId);

    public sealed class Tracker(JournalWitness witness, string persistenceId)
    {
        private long witnessed;
        private bool checkedRecovery;

        /// <summary>After recovery to `lastSequenceNr`: what was lost (null: nothing). A loss stays on record: later writes below it do not overwrite it.</summary>
        public string? Recovered(long lastSequenceNr)
        {
            var loss = witness.Loss(persistenceId, lastSequenceNr);
            witnessed = Math.Max(lastSequenceNr, witness.Recorded(persistenceId));
            checkedRecovery = true;
            return loss;
        }

        /// <summary>After any message: records LastSequenceNr when the journal acknowledged more (nothing before recovery was checked).</summary>
        public void Acknowledged(long lastSequenceNr)
        {
            if (!checkedRecovery || lastSequenceNr <= witnessed) return;
            witnessed = lastSequenceNr;
            witness.Record(persistenceId, lastSequenceNr);
        }
    }
}
