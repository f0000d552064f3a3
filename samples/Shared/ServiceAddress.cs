// Shared by the samples (linked into each project): the one address a sample listens on.
using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Batching.Samples;

internal static class ServiceAddress
{
    /// <summary><c>--port N</c>, else <c>--urls</c> / ASPNETCORE_URLS (one http://127.0.0.1 or localhost address), else
    /// <paramref name="defaultPort"/>; always 127.0.0.1, so running a sample exposes nothing.</summary>
    /// <exception cref="ArgumentException">Any other address or port; the message names the setting.</exception>
    public static string Loopback(string? port, string? urls, int defaultPort)
    {
        if (port is not null)
        {
            if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out int number) || number > 65535)
            {
                throw new ArgumentException($"--port must be a number from 0 to 65535; it was '{port}'.");
            }

            return $"http://127.0.0.1:{number}";
        }

        if (string.IsNullOrWhiteSpace(urls))
        {
            return $"http://127.0.0.1:{defaultPort}";
        }

        string[] list = urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (list.Length != 1 || !Uri.TryCreate(list[0], UriKind.Absolute, out Uri? uri) || uri.Scheme != Uri.UriSchemeHttp
            || uri.Host is not ("127.0.0.1" or "localhost"))
        {
            throw new ArgumentException(
                $"This sample listens on one http://127.0.0.1:PORT address only; ASPNETCORE_URLS/--urls was '{urls}'. Use --port N, or http://127.0.0.1:N.");
        }

        return $"http://127.0.0.1:{uri.Port}";
    }

    /// <summary>The loopback address of <see cref="Loopback"/>, or the same port on every interface with
    /// <c>--Server:AllInterfaces true</c> (a container behind a Kubernetes Service); never the default.</summary>
    public static string Listen(IConfiguration configuration, int defaultPort)
    {
        string loopback = Loopback(configuration["port"], configuration["urls"], defaultPort);
        return configuration.GetValue("Server:AllInterfaces", false) ? loopback.Replace("127.0.0.1", "0.0.0.0", StringComparison.Ordinal) : loopback;
    }
}
