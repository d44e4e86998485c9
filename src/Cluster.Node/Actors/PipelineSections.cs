using Distill.Engine.Methods;
using Distill.Engine.Specs;

namespace Cluster.Node.Actors;

/// <summary>
/// The data-free sections the generator and student entities read today. (They still branch on
/// DAFL against DeepInversion; the method-agnostic source, teacher and student entities replace
/// this, issue 14 part 2.)
/// </summary>
internal static class PipelineSections
{
    extension(RunSpec spec)
    {
        public DaflSpec? Dafl => spec.Settings as DaflSpec;
        public DeepInversionSpec? DeepInversion => spec.Settings as DeepInversionSpec;
        /// <summary>ADI: rounds compete with the student.</summary>
        public bool Adaptive => spec.Settings is DeepInversionSpec { CompetitionWeight: > 0 };
    }
}
