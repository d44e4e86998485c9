using System.Reflection;

namespace Cluster.Tests;

/// <summary>
/// scripts/test.sh runs the tests that must run alone in a test host of their own, chosen by a
/// trait: a class in the "mnist" collection without it would run beside the process lanes' test
/// threads, and one with it outside the collection would run beside other tests in that host.
/// </summary>
public sealed class TestHostsTests
{
    [Fact]
    public void Every_class_of_the_mnist_collection_and_only_those_carry_the_alone_or_quiet_trait()
    {
        var classes = typeof(TestHostsTests).Assembly.GetTypes()
            .Where(t => t.GetMethods().Any(m => m.GetCustomAttributes<FactAttribute>().Any())).ToList();
        static bool InMnist(Type t) => t.GetCustomAttributesData().Any(a => a.AttributeType == typeof(CollectionAttribute)
                                                                          && a.ConstructorArguments[0].Value as string == MnistCollection.Name);
        static bool Alone(Type t) => t.GetCustomAttributesData().Any(a => a.AttributeType == typeof(TraitAttribute)
                                                                        && a.ConstructorArguments[0].Value as string == MnistCollection.Host
                                                                        && a.ConstructorArguments[1].Value as string is MnistCollection.Alone or MnistCollection.Quiet);
        Assert.True(classes.Count(InMnist) >= 10, $"only {classes.Count(InMnist)} classes found in the mnist collection");
        Assert.Empty(classes.Where(t => InMnist(t) != Alone(t)).Select(t => $"{t.Name}: collection mnist {InMnist(t)}, trait {Alone(t)}"));
    }
}
