// JavaClient: the lab's Java client. java.net.http.HttpClient GETs URL over HTTP/1.1, pinned
// to one TLS version, through an HTTP CONNECT proxy when one is given. It trusts what the JVM's
// default trust store holds: the lab points it at a PKCS#12 store made with keytool
// (-Djavax.net.ssl.trustStore=...). JSSE is Java code, not a native library: no uprobe can read
// its chains, so its TLS 1.3 chains come from sensord's probe. It exits 0 once the response's
// head arrived, 1 on any error (said on stderr).
//
//   java -cp DIR JavaClient URL 1.2|1.3 [PROXY_HOST:PORT]

import java.net.InetSocketAddress;
import java.net.ProxySelector;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import javax.net.ssl.SSLParameters;

public class JavaClient {
    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: JavaClient URL 1.2|1.3 [PROXY_HOST:PORT]");
            System.exit(2);
        }
        try {
            SSLParameters tls = new SSLParameters();
            tls.setProtocols(new String[] {"TLSv" + args[1]});
            HttpClient.Builder builder = HttpClient.newBuilder()
                    .version(HttpClient.Version.HTTP_1_1)
                    .sslParameters(tls)
                    .connectTimeout(Duration.ofSeconds(15));
            if (args.length > 2) {
                int colon = args[2].lastIndexOf(':');
                builder.proxy(ProxySelector.of(new InetSocketAddress(
                        args[2].substring(0, colon),
                        Integer.parseInt(args[2].substring(colon + 1)))));
            }
            HttpRequest request = HttpRequest.newBuilder(URI.create(args[0]))
                    .timeout(Duration.ofSeconds(15))
                    .build();
            // Returns once the response's head arrived: the body is not waited for (Java 17's
            // client does not see the end of an HTTP/1.0 body that `openssl s_server -www`
            // ends with a TLS 1.3 close_notify, and hangs).
            HttpResponse<java.io.InputStream> response =
                    builder.build().send(request, HttpResponse.BodyHandlers.ofInputStream());
            System.out.println("HTTP " + response.statusCode());
            System.exit(0);
        } catch (Exception e) {
            System.err.println(e);
            System.exit(1);
        }
    }
}
